"""The population test's card checker can fail: fabricated unjustified cards are caught, real cards pass.

``check_cards`` is what ``test_population.py`` trusts to say "no card without a justifying current value";
these tests show it rejects a card whose value is missing, too old, below the threshold, unpaired, in a
misread unit, on a refuted or non-skin finding, for a deceased patient or over the summary budget, and that
it accepts every card the service gives the project's fixture patients (every flag kind it has a rule for).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hooks.services.calcinosis import prefetch_templates
from tests.conftest import FIXED_NOW, FIXTURES, load_fixture
from tests.fhir_builders import condition, lab, medication, patient, prefetch_for
from tests.integration.card_justification import check_cards
from tests.integration.conftest import loader
from tests.integration.prefetch_builder import build_prefetch

URL = "/cds-services/calcinosis-assessment"
THIGH = "371305003"  # SNOMED body site used by the calciphylaxis fixtures


def card(kind: str, summary: str = "A card", indicator: str = "warning", **extension: Any) -> dict[str, Any]:
    return {"summary": summary, "indicator": indicator, "extension": {"calcinosis-cds": {"kind": kind, **extension}}}


def problems(cards: list[dict[str, Any]], resources: list[dict[str, Any]]) -> list[str]:
    return [p.problem for p in check_cards(cards, prefetch_for(resources), FIXED_NOW)]


CA_X_P = card("red-flag", indicator="critical", flag="high-calcium-phosphate-product")
HYPERCALCAEMIA = card("red-flag", indicator="critical", flag="severe-hypercalcemia")
CALCIPHYLAXIS = card("red-flag", indicator="critical", flag="suspected-calciphylaxis")
DIALYSIS = [patient(birth="1950-01-01"), condition("N18.6"), condition("Z99.2")]


def test_ca_x_p_card_needs_both_values_current_paired_and_over_the_threshold() -> None:
    high = [lab("17861-6", 10.5, "mg/dL", days_ago=3), lab("2777-1", 7.0, "mg/dL", days_ago=3)]  # 73.5
    assert problems([CA_X_P], [patient(), *high]) == []
    assert problems([CA_X_P], [patient(), high[0]]), "no phosphate"
    low = [lab("17861-6", 9.5, "mg/dL", days_ago=3), lab("2777-1", 7.0, "mg/dL", days_ago=3)]  # 66.5
    assert problems([CA_X_P], [patient(), *low]), "product under 70"
    apart = [lab("17861-6", 10.5, "mg/dL", days_ago=3), lab("2777-1", 7.0, "mg/dL", days_ago=20)]
    assert problems([CA_X_P], [patient(), *apart]), "draws 17 days apart"
    stale = [lab("17861-6", 10.5, "mg/dL", days_ago=100), lab("2777-1", 7.0, "mg/dL", days_ago=100)]
    assert problems([CA_X_P], [patient(), *stale]), "outside the 90-day look-back"
    assert problems([CA_X_P], [patient(birth="2015-01-01"), *high]), "not an adult"


def test_hypercalcaemia_card_reads_units_and_the_albumin_correction_itself() -> None:
    assert problems([HYPERCALCAEMIA], [patient(), lab("2000-8", 3.5, "mmol/L")]) == []  # 14.0 mg/dL
    assert problems([HYPERCALCAEMIA], [patient(), lab("2000-8", 3.0, "mmol/L")])  # 12.0 mg/dL
    # 13.0 measured with albumin 2.5 g/dL: corrected 14.2.
    assert problems([HYPERCALCAEMIA], [patient(), lab("17861-6", 13.0, "mg/dL"), lab("1751-7", 2.5, "g/dL")]) == []
    assert problems([HYPERCALCAEMIA], [patient(), lab("17861-6", 13.0, "mg/dL"), lab("1751-7", 40, "g/L")])
    assert problems([HYPERCALCAEMIA], [patient(), lab("17861-6", 14.6, "mg/dL", days_ago=100)]), "history only"
    assert problems([HYPERCALCAEMIA], [patient(), lab("17861-6", 14.6, "mg/dL", status="entered-in-error")])


def test_calciphylaxis_card_needs_kidney_failure_and_a_skin_lesion() -> None:
    thigh_ulcer = condition("46742003", "snomed", sites=(THIGH,), text="Painful necrotic ulcer of the thigh")
    assert problems([CALCIPHYLAXIS], [*DIALYSIS, thigh_ulcer]) == []
    assert problems([CALCIPHYLAXIS], [patient(), thigh_ulcer]), "no kidney failure"
    peptic = condition(None, text="Peptic ulcer")
    assert problems([CALCIPHYLAXIS], [*DIALYSIS, peptic]), "an ulcer that is not on the skin"
    refuted = condition("46742003", "snomed", sites=(THIGH,), text="Skin ulcer", verification="refuted")
    assert problems([CALCIPHYLAXIS], [*DIALYSIS, refuted]), "refuted finding"
    healed = condition("46742003", "snomed", sites=(THIGH,), text="Skin ulcer", clinical="resolved")
    assert problems([CALCIPHYLAXIS], [*DIALYSIS, healed]), "resolved finding"


def test_untreated_calciphylaxis_is_unjustified_once_thiosulfate_is_ordered() -> None:
    untreated = card("red-flag", indicator="critical", flag="untreated-calciphylaxis")
    calciphylaxis = condition("E83.59", text="Calciphylaxis")
    assert problems([untreated], [*DIALYSIS, calciphylaxis]) == []
    assert problems([untreated], [*DIALYSIS, calciphylaxis, medication("V03AB06", days_ago=5)])


def test_deceased_patients_get_no_cards_at_all() -> None:
    dead = {**patient(), "deceasedDateTime": "2026-10-01T00:00:00+00:00"}
    high = [lab("17861-6", 14.6, "mg/dL", days_ago=3)]
    assert problems([HYPERCALCAEMIA], [patient(), *high]) == []
    assert problems([HYPERCALCAEMIA], [dead, *high]) == ["card for a deceased patient"]


def test_summary_budget_unknown_flags_and_kinds_and_cards_without_calcinosis() -> None:
    high = [patient(), lab("17861-6", 14.6, "mg/dL", days_ago=3)]
    long_summary = {**HYPERCALCAEMIA, "summary": "x" * 140}
    assert problems([long_summary], high) == ["summary is 140 characters (limit < 140)"]
    assert problems([card("red-flag", flag="made-up-flag")], high) == ["no justification rule for 'made-up-flag'"]
    assert problems([card("advert")], high) == ["no justification rule for card kind 'advert'"]
    assert problems([card("red-flag", indicator="critical", flag="moderate-hypercalcemia")], high) == [
        "critical indicator on non-critical flag 'moderate-hypercalcemia'"]
    subtype = card("subtype-assessment", subtype="metastatic", flags=["severe-hypercalcemia"])
    assert problems([subtype], high) == ["subtype-assessment card without calcinosis (code or text) on record"]
    assert problems([subtype], [*high, condition("L94.2")]) == []
    # A flag named on the subtype card ("Also:" line) is checked like a red-flag card.
    assert problems([subtype], [patient(), condition("L94.2"), lab("17861-6", 9.6, "mg/dL")])


# ---------------------------------------------------------------------- real cards from the service

FIXTURE_FILES = sorted((FIXTURES / "calcinosis").glob("*.json"))


def _call(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = loader.rewrite_to_put(load_fixture(str(path.relative_to(FIXTURES))))
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    prefetch = build_prefetch(bundle, prefetch_templates(), {"patientId": patient_id})
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/example", "patientId": patient_id}, "prefetch": prefetch}
    return body, prefetch


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_every_card_of_the_fixture_patients_is_judged_justified(
        make_client: Callable[..., Any], language: str) -> None:
    flags: set[str] = set()
    async with make_client() as client:
        for path in FIXTURE_FILES:
            body, prefetch = _call(path)
            response = await client.post(URL, json=body, headers={"Accept-Language": language})
            assert response.status_code == 200
            cards = response.json()["cards"]
            assert check_cards(cards, prefetch, FIXED_NOW) == [], path.name
            flags |= {c["extension"]["calcinosis-cds"].get("flag") or "" for c in cards}
    assert {"suspected-calciphylaxis", "neonatal-ceftriaxone-calcium"} <= flags


async def test_a_real_card_becomes_unjustified_when_its_value_is_taken_away(make_client: Callable[..., Any]) -> None:
    """The risk patient's Ca x P card, as the service gives it, fails once the phosphate is gone or old."""
    body, prefetch = _call(FIXTURES / "calcinosis" / "risk_dialysis_raised_ca_x_p.json")
    async with make_client() as client:
        cards = (await client.post(URL, json=body)).json()["cards"]
    assert [c["extension"]["calcinosis-cds"].get("risk") for c in cards] == ["metastatic-calcification-risk"]
    assert check_cards(cards, prefetch, FIXED_NOW) == []

    def is_phosphate(entry: dict[str, Any]) -> bool:
        return any(c.get("code") == "2777-1" for c in entry["resource"]["code"]["coding"])

    without = copy.deepcopy(prefetch)
    without["observations"]["entry"] = [e for e in without["observations"]["entry"] if not is_phosphate(e)]
    assert check_cards(cards, without, FIXED_NOW)
    older = copy.deepcopy(prefetch)
    for entry in older["observations"]["entry"]:
        if is_phosphate(entry):
            entry["resource"]["effectiveDateTime"] = "2026-06-01T09:00:00+00:00"
    assert check_cards(cards, older, FIXED_NOW)
