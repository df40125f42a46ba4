"""Issue 11: the same patient as EHRs really send it gives the same cards as the clean version.

Each variant rewrites a clean fixture bundle the way a vendor or a generator does (unit spellings, OID
systems, panels, ``issued`` dates, included Medications, statuses...). The cards must be identical, or
differ in the one documented, safe way the test names (a "not recorded" line, no critical card).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from hooks.engine.assessment import assess
from hooks.engine.cards import EXTENSION_KEY, render_cards
from hooks.engine.service import facts_from_resources
from tests.fhir_builders import NOW
from tests.hooks.engine.conftest import fixture_resources

Resources = list[dict[str, Any]]
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
ICD10CM_OID = "urn:oid:2.16.840.1.113883.6.90"


def cards(resources: Resources, pid: str, unavailable: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    facts = facts_from_resources(resources, patient_id=pid, now=NOW, unavailable=unavailable)
    rendered = render_cards(assess(facts), facts, locale="fr", seed="variants")
    return [card.to_json() for card in rendered]


def by_id(resources: Resources, ident: str) -> dict[str, Any]:
    return next(r for r in resources if r.get("id") == ident)


def clean(name: str) -> tuple[str, Resources]:
    pid, resources = fixture_resources(name)
    return pid, copy.deepcopy(resources)


def egfr_decides(resources: Resources) -> Resources:
    """Calciphylaxis on a current eGFR of 8 alone: no ESRD or dialysis code, no creatinine."""
    kept = [r for r in resources if r.get("id") not in {"cal-esrd", "cal-dialysis", "cal-creat"}]
    egfr = copy.deepcopy(by_id(resources, "cal-creat"))
    egfr.update(id="cal-egfr", code={"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
                valueQuantity={"value": 8, "unit": "mL/min/1.73m2", "system": "http://unitsofmeasure.org",
                               "code": "mL/min/{1.73_m2}"})
    return [*kept, egfr]


def set_unit(ident: str, unit: str, value: float | None = None, *, ucum: bool = False) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        quantity = by_id(resources, ident)["valueQuantity"]
        quantity["unit"] = unit
        if ucum:
            quantity["code"] = unit
        else:
            quantity.pop("code", None)
            quantity.pop("system", None)
        if value is not None:
            quantity["value"] = value
    return change


def systems(old: str, new: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        for resource in resources:
            for field in ("code", "medicationCodeableConcept"):
                for coding in (resource.get(field) or {}).get("coding", []):
                    if coding.get("system") == old:
                        coding["system"] = new
    return change


def issued_only(resources: Resources) -> None:
    for resource in resources:
        if resource["resourceType"] == "Observation":
            resource["issued"] = resource.pop("effectiveDateTime")


def as_panel(resources: Resources) -> None:
    """Calcium and phosphate sent as components of one panel Observation (no code of its own the brief lists)."""
    calcium, phosphate = by_id(resources, "met-ca"), by_id(resources, "met-p")
    resources.remove(calcium)
    resources.remove(phosphate)
    panel = copy.deepcopy(calcium)
    panel.update(id="met-panel", code={"text": "Bilan phosphocalcique"})
    panel.pop("valueQuantity")
    panel.pop("referenceRange", None)
    panel["component"] = [{key: item[key] for key in ("code", "valueQuantity", "referenceRange") if key in item}
                          for item in (calcium, phosphate)]
    resources.append(panel)


def included_medication(code: dict[str, Any]) -> Callable[[Resources], None]:
    """Warfarin as a medicationReference to a Medication sent beside it (search.mode include)."""
    def change(resources: Resources) -> None:
        order = by_id(resources, "cal-warfarin")
        order.pop("medicationCodeableConcept")
        order["medicationReference"] = {"reference": "Medication/coumadin-5", "display": "COUMADIN 5 MG"}
        resources.append({"resourceType": "Medication", "id": "coumadin-5", "code": code})
    return change


def calcinosis_as_snomed(resources: Resources) -> None:
    condition = by_id(resources, "met-calcinosis")
    condition["code"]["coding"] = [{"system": "http://snomed.info/sct", "code": "6595006", "display": "Calcinosis"}]


def no_clinical_status_but_abated(ident: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        condition = by_id(resources, ident)
        condition.pop("clinicalStatus", None)
        condition["abatementDateTime"] = "2020-01-01"
    return change


def verification(ident: str, status: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        by_id(resources, ident)["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]}
    return change


def medication_status(ident: str, status: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        by_id(resources, ident)["status"] = status
    return change


SAME_CARDS: list[tuple[str, str, Callable[[Resources], Resources] | None, Callable[[Resources], None]]] = [
    ("egfr 1.73m2 (display only)", "calciphylaxis_dialysis_warfarin.json", egfr_decides,
     set_unit("cal-egfr", "mL/min/1.73m2")),
    ("egfr 1.73.m2 as the UCUM code", "calciphylaxis_dialysis_warfarin.json", egfr_decides,
     set_unit("cal-egfr", "mL/min/1.73.m2", ucum=True)),
    ("calcium in mEq/L", "metastatic_ckd4_hyperparathyroidism.json", None, set_unit("met-ca", "mEq/L", 5.44)),
    ("calcium in mg/dl", "metastatic_ckd4_hyperparathyroidism.json", None, set_unit("met-ca", "mg/dl")),
    ("LOINC as an OID", "metastatic_ckd4_hyperparathyroidism.json", None, systems("http://loinc.org", LOINC_OID)),
    ("LOINC over https", "metastatic_ckd4_hyperparathyroidism.json", None,
     systems("http://loinc.org", "https://loinc.org")),
    ("ICD-10-CM as an OID", "metastatic_ckd4_hyperparathyroidism.json", None,
     systems("http://hl7.org/fhir/sid/icd-10-cm", ICD10CM_OID)),
    ("dated by issued only", "metastatic_ckd4_hyperparathyroidism.json", None, issued_only),
    ("calcium and phosphate as a panel", "metastatic_ckd4_hyperparathyroidism.json", None, as_panel),
    ("calcinosis as SNOMED 6595006", "metastatic_ckd4_hyperparathyroidism.json", None, calcinosis_as_snomed),
    ("warfarin as an included Medication, RxNorm clinical drug", "calciphylaxis_dialysis_warfarin.json", None,
     included_medication({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332",
                                       "display": "COUMADIN 5 MG"}]})),
    ("warfarin as an included Medication, brand name only", "calciphylaxis_dialysis_warfarin.json", None,
     included_medication({"text": "COUMADIN 5 MG TABLET"})),
]


@pytest.mark.parametrize(("name", "fixture", "prepare", "variant"), SAME_CARDS, ids=[v[0] for v in SAME_CARDS])
def test_a_vendor_variant_gives_the_cards_of_the_clean_version(
        name: str, fixture: str, prepare: Callable[[Resources], Resources] | None,
        variant: Callable[[Resources], None]) -> None:
    pid, resources = clean(fixture)
    if prepare is not None:
        resources = prepare(resources)
    expected = cards(resources, pid)
    assert expected, "the clean version must have cards, or the comparison proves nothing"
    variant(resources)
    assert cards(resources, pid) == expected


def kinds(found: list[dict[str, Any]]) -> list[str]:
    return [str(card["extension"][EXTENSION_KEY].get("flag") or card["extension"][EXTENSION_KEY]["kind"])
            for card in found]


def test_egfr_in_ml_per_min_is_read_per_1_73_m2_with_a_note() -> None:
    pid, resources = clean("calciphylaxis_dialysis_warfarin.json")
    resources = egfr_decides(resources)
    expected = kinds(cards(resources, pid))
    set_unit("cal-egfr", "mL/min", ucum=True)(resources)
    facts = facts_from_resources(resources, patient_id=pid, now=NOW)
    egfr = facts.latest("egfr")
    assert egfr is not None
    assert "unit-read-as-per-1.73m2" in egfr.flags
    assert kinds(cards(resources, pid)) == expected  # the critical flag is not lost


def test_a_provisional_calciphylaxis_is_suspected_and_never_critical() -> None:
    pid, resources = clean("calciphylaxis_dialysis_warfarin.json")
    assert cards(resources, pid)[0]["indicator"] == "critical"
    for ident in ("cal-dx", "cal-ulcer", "cal-eschar", "cal-pain"):
        verification(ident, "provisional")(resources)
    found = cards(resources, pid)
    assert "critical" not in [card["indicator"] for card in found]
    # Still said, as warnings on the subtype card, with the basis named: suspected findings, to confirm.
    subtype = next(card for card in found if card["extension"][EXTENSION_KEY]["kind"] == "subtype-assessment")
    assert {"suspected-calciphylaxis", "untreated-calciphylaxis"} <= set(subtype["extension"][EXTENSION_KEY]["flags"])
    assert subtype["indicator"] == "warning"
    assert "(à confirmer)" in subtype["detail"]
    assert "diagnostic provisoire ou suspecté" in subtype["detail"]


def test_an_abated_esrd_without_clinical_status_is_resolved() -> None:
    pid, resources = clean("metastatic_ckd4_hyperparathyroidism.json")
    expected = cards(resources, pid)
    resources.append({"resourceType": "Condition", "id": "old-aki", "subject": {"reference": f"Patient/{pid}"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z99.2"}]}})
    assert cards(resources, pid) != expected  # an active dialysis code changes the picture...
    no_clinical_status_but_abated("old-aki")(resources)
    assert cards(resources, pid) == expected  # ...an abated one does not


@pytest.mark.parametrize("status", ["stopped", "completed", "draft", "cancelled", "entered-in-error"])
def test_an_order_that_is_not_active_or_on_hold_is_not_current(status: str) -> None:
    pid, resources = clean("metastatic_ckd4_hyperparathyroidism.json")
    medication_status("met-caco3", status)(resources)
    medication_status("met-calcitriol", status)(resources)
    found = cards(resources, pid)
    therapy = next(card for card in found if card["extension"][EXTENSION_KEY]["kind"] == "therapy-options")
    assert "en cours" not in therapy["detail"]
    assert "stop-calcium-vitamin-d" not in therapy["extension"][EXTENSION_KEY]["options"]


def test_unreadable_medications_are_unknown_never_none() -> None:
    pid, resources = clean("calciphylaxis_dialysis_warfarin.json")
    resources = [r for r in resources if r["resourceType"] != "MedicationRequest"]
    resources.append({"resourceType": "Condition", "id": "cal-known", "subject": {"reference": f"Patient/{pid}"},
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "237900002"}]}})
    read = kinds(cards(resources, pid))
    assert "untreated-calciphylaxis" in read or "untreated-calciphylaxis" in str(cards(resources, pid))
    unknown = cards(resources, pid, unavailable=("medications",))
    assert "untreated-calciphylaxis" not in str([card["extension"] for card in unknown])
    assert any("Traitements en cours illisibles" in (card.get("detail") or "") for card in unknown)


def test_a_deceased_patient_gets_no_cards() -> None:
    pid, resources = clean("calciphylaxis_dialysis_warfarin.json")
    assert cards(resources, pid)
    by_id(resources, pid)["deceasedDateTime"] = "2026-11-01"
    assert cards(resources, pid) == []


def test_a_missing_birth_date_is_named_on_the_card() -> None:
    pid, resources = clean("metastatic_ckd4_hyperparathyroidism.json")
    by_id(resources, pid).pop("birthDate")
    text = " ".join(card.get("detail") or "" for card in cards(resources, pid))
    assert "Date de naissance absente" in text


@pytest.mark.parametrize("text", ["Peptic ulcer", "Acute tubular necrosis", "Avascular necrosis of femoral head",
                                  "Pressure ulcer of sacrum", "Diabetic foot ulcer", "Ulcère gastrique"])
def test_non_skin_ulcers_and_necroses_raise_no_critical_card_in_a_dialysis_patient(text: str) -> None:
    pid, resources = clean("calciphylaxis_dialysis_warfarin.json")
    resources = [r for r in resources if r.get("id") not in {"cal-ulcer", "cal-eschar", "cal-dx", "cal-pain"}]
    resources.append({"resourceType": "Condition", "id": "other", "subject": {"reference": f"Patient/{pid}"},
                      "code": {"text": text}})
    resources.append({"resourceType": "Condition", "id": "pain", "subject": {"reference": f"Patient/{pid}"},
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "22253000"}]}})
    assert "critical" not in [card["indicator"] for card in cards(resources, pid)]
