"""Small builders for the FHIR R4 resources the mapping tests feed to build_facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_mappings import MappingOptions, build_facts
from fhir_mappings.facts import PatientFacts

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CIM10 = "https://smt.esante.gouv.fr/terminologie-cim-10"
UCUM = "http://unitsofmeasure.org"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ADULT = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-06-15", "gender": "female"}


def quantity(value: float, unit: str, *, comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return q


def observation(
    code: str,
    *,
    rid: str = "o1",
    when: str | None = "2026-02-20T08:00:00Z",
    value: float | None = None,
    unit: str | None = None,
    status: str = "final",
    system: str = LOINC,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if when is not None:
        resource["effectiveDateTime"] = when
    if value is not None and unit is not None:
        resource["valueQuantity"] = quantity(value, unit)
    resource.update(extra)
    return resource


def condition(
    code: str | None,
    *,
    system: str = SNOMED,
    rid: str = "c1",
    clinical: str | None = "active",
    verification: str | None = None,
    text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Condition", "id": rid}
    concept: dict[str, Any] = {}
    if code is not None:
        concept["coding"] = [{"system": system, "code": code}]
    if text is not None:
        concept["text"] = text
    if concept:
        resource["code"] = concept
    if clinical is not None:
        resource["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
        }
    if verification is not None:
        resource["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        }
    resource.update(extra)
    return resource


def medication_request(
    *,
    rid: str = "m1",
    status: str = "active",
    codings: list[dict[str, str]] | None = None,
    text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    if concept:
        resource["medicationCodeableConcept"] = concept
    resource.update(extra)
    return resource


def facts(
    *,
    patient: dict[str, Any] | None = None,
    observations: list[dict[str, Any]] = (),  # type: ignore[assignment]
    conditions: list[dict[str, Any]] = (),  # type: ignore[assignment]
    medications: list[dict[str, Any]] = (),  # type: ignore[assignment]
    now: datetime = NOW,
    options: MappingOptions | None = None,
) -> PatientFacts:
    return build_facts(
        patient=ADULT if patient is None else patient,
        observations=observations,
        conditions=conditions,
        medications=medications,
        now=now,
        options=options or MappingOptions(),
    )
