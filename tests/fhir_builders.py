"""Small builders for FHIR R4 test resources (valid R4: checked with fhir.resources R4B in the tests).

Codes used here all come from the project's terminology tables (clinical brief); nothing is invented.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

SYSTEMS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "cim10": "https://smt.esante.gouv.fr/terminologie-cim-10",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "atc": "http://www.whocc.no/atc",
    "ucum": "http://unitsofmeasure.org",
}

_counter = {"n": 0}


def _next_id(prefix: str) -> str:
    _counter["n"] += 1
    return f"{prefix}{_counter['n']}"


def when(days_ago: float, now: datetime = NOW) -> str:
    return (now - timedelta(days=days_ago)).isoformat()


def patient(pid: str = "p1", *, birth: str = "1970-01-01", gender: str = "female") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def lab(
    code: str,
    value: float | None = None,
    unit: str | None = None,
    *,
    days_ago: float = 5,
    pid: str = "p1",
    rid: str | None = None,
    interpretation: str | None = None,
    ref: tuple[float | None, float | None] | None = None,
    value_string: str | None = None,
    negative: bool | None = None,
    status: str = "final",
    now: datetime = NOW,
    display: str | None = None,
) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": SYSTEMS["loinc"], "code": code}
    if display is not None:
        coding["display"] = display
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or _next_id("obs"),
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when(days_ago, now),
    }
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": SYSTEMS["ucum"], "code": unit}
    elif value_string is not None:
        resource["valueString"] = value_string
    elif negative is not None:
        resource["valueCodeableConcept"] = {"text": "Negative" if negative else "Positive"}
        resource["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "NEG" if negative else "POS"}]}]
    if interpretation:
        resource["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": interpretation}]}]
    if ref is not None:
        low, high = ref
        bound: dict[str, Any] = {}
        if low is not None:
            bound["low"] = {"value": low, "unit": unit, "system": SYSTEMS["ucum"], "code": unit}
        if high is not None:
            bound["high"] = {"value": high, "unit": unit, "system": SYSTEMS["ucum"], "code": unit}
        resource["referenceRange"] = [bound]
    return resource


def condition(
    code: str | None,
    system: str = "icd10cm",
    *,
    text: str | None = None,
    sites: tuple[str, ...] = (),
    clinical: str = "active",
    verification: str = "confirmed",
    pid: str = "p1",
    rid: str | None = None,
    onset_days_ago: float | None = 30,
    note: str | None = None,
    now: datetime = NOW,
) -> dict[str, Any]:
    code_element: dict[str, Any] = {}
    if code is not None:
        code_element["coding"] = [{"system": SYSTEMS.get(system, system), "code": code}]
    if text:
        code_element["text"] = text
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid or _next_id("cond"),
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
        "code": code_element,
        "subject": {"reference": f"Patient/{pid}"},
    }
    if onset_days_ago is not None:
        resource["onsetDateTime"] = when(onset_days_ago, now)
    if sites:
        resource["bodySite"] = [{"coding": [{"system": SYSTEMS["snomed"], "code": s}]} for s in sites]
    if note:
        resource["note"] = [{"text": note}]
    return resource


def medication(
    code: str | None,
    system: str = "atc",
    *,
    text: str | None = None,
    status: str = "active",
    days_ago: float = 10,
    pid: str = "p1",
    rid: str | None = None,
    now: datetime = NOW,
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code is not None:
        concept["coding"] = [{"system": SYSTEMS.get(system, system), "code": code}]
    if text:
        concept["text"] = text
    return {
        "resourceType": "MedicationRequest",
        "id": rid or _next_id("med"),
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": when(days_ago, now),
    }


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def prefetch_for(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The four prefetch keys of calcinosis-assessment, filled from a list of resources."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return {
        "patient": by_type["Patient"][0],
        "conditions": searchset(by_type.get("Condition", [])),
        "observations": searchset(by_type.get("Observation", [])),
        "medications": searchset(by_type.get("MedicationRequest", [])),
    }


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle with PUT entries (stable ids when loaded into a FHIR server)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }


def normal_chemistry(pid: str = "p1", *, days_ago: float = 5, si: bool = False) -> list[dict[str, Any]]:
    """Calcium, phosphate, albumin, PTH, creatinine, 25-OH-D all within the brief's default ranges."""
    if si:
        return [
            lab("2000-8", 2.35, "mmol/L", pid=pid, days_ago=days_ago),
            lab("14879-1", 1.10, "mmol/L", pid=pid, days_ago=days_ago),
            lab("1751-7", 40, "g/L", pid=pid, days_ago=days_ago),
            lab("2731-8", 40, "ng/L", pid=pid, days_ago=days_ago),
            lab("14682-9", 70, "umol/L", pid=pid, days_ago=days_ago),
            lab("14635-7", 75, "nmol/L", pid=pid, days_ago=days_ago),
        ]
    return [
        lab("17861-6", 9.4, "mg/dL", pid=pid, days_ago=days_ago),
        lab("2777-1", 3.5, "mg/dL", pid=pid, days_ago=days_ago),
        lab("1751-7", 4.1, "g/dL", pid=pid, days_ago=days_ago),
        lab("2731-8", 40, "pg/mL", pid=pid, days_ago=days_ago),
        lab("2160-0", 0.8, "mg/dL", pid=pid, days_ago=days_ago),
        lab("62292-8", 32, "ng/mL", pid=pid, days_ago=days_ago),
    ]
