"""Issue 15, clinical review findings 2-4, 13, 14 and 20: the calcium / vitamin D check never says "delete"
for a hypocalcaemic or hypoparathyroid patient, is not about IV calcium, does not count the drafted drug as its
own risk factor, names the criterion that fired, reads ionised calcium, keeps nutritional vitamin D to rule C7;
the sevelamer swap only in CKD G3-5D and never for a combination product or a patient on a non-calcium binder.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, lab, medication, patient
from tests.hooks.engine.conftest import fixture_resources
from tests.hooks.engine.order_support import LOCALES, actions, checks, draft, order_cards, text, the_card

CHECK = "calcium-vitamin-d-high-calcium"


def adult(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1", birth="1960-05-01", gender="male"), *extra]


def dialysis(calcium: float, phosphate: float, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return adult(condition("N18.6"), condition("Z99.2"), lab("17861-6", calcium, "mg/dL"),
                 lab("2777-1", phosphate, "mg/dL"), lab("1751-7", 4.0, "g/dL"), *extra)


def swap_offered(card: Any) -> bool:
    return any(a.type == "create" for s in card.suggestions or () for a in s.actions or ())


# ----------------------------------------------------------------------------- finding 2: low calcium, IV calcium


def test_iv_calcium_gluconate_for_a_hypocalcaemic_dialysis_patient_is_not_flagged() -> None:
    resources = dialysis(7.0, 5.0, medication("A12AA04", rid="caco3"), medication("A11CC04", rid="calcitriol"))
    iv_calcium = draft("A12AA03", rid="ca-iv", text="Calcium gluconate 10% IV")
    assert CHECK not in checks(order_cards(resources, iv_calcium))


@pytest.mark.parametrize("locale", LOCALES)
def test_suspected_calciphylaxis_with_low_calcium_never_suggests_delete_or_swap(locale: str) -> None:
    pid, chart = fixture_resources("calciphylaxis_dialysis_warfarin.json")
    # The chart's calcium replaced by a low one (7.4 mg/dL yesterday): calciphylaxis with hypocalcaemia.
    resources = [r for r in chart if not (r["resourceType"] == "Observation"
                                          and r["code"]["coding"][0]["code"] == "17861-6")]
    resources.append(lab("17861-6", 7.4, "mg/dL", pid=pid, days_ago=1))
    card = the_card(order_cards(resources, draft("A12AA04", pid=pid, rid="caco3"), pid=pid, locale=locale), CHECK)
    assert card.suggestions is None
    assert ("ne pas les arrêter" if locale == "fr" else "do not stop them") in text(card).lower()
    assert ("hypocalcémie" if locale == "fr" else "low calcium") in card.summary
    # The low (albumin-corrected) calcium behind the advice is among the facts.
    assert ("Calcémie corrigée 2,09 mmol/L" if locale == "fr" else "Corrected calcium 8.4 mg/dL") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_calcium_binder_at_ca_x_p_75_with_low_calcium_is_replacement_not_stop(locale: str) -> None:
    # Ca 7.5 (low) x P 10 = 75: the Ca x P criterion fires, the low calcium sets the advice.
    card = the_card(order_cards(dialysis(7.5, 10.0), draft("A12AA04", rid="caco3"), locale=locale), CHECK)
    assert card.suggestions is None
    expected = "Hypoparathyroïdie ou hypocalcémie" if locale == "fr" else "Hypoparathyroidism or low calcium"
    assert expected in text(card)


def test_renewing_the_binder_does_not_count_it_as_a_risk_factor() -> None:
    # Dialysis, normal calcium and phosphate, on calcium carbonate and calcitriol: the binder being renewed is not
    # the second major risk factor (only calcitriol is), and no minor factors: no card.
    resources = dialysis(9.2, 4.0, medication("A12AA04", rid="caco3-current"), medication("A11CC04", rid="calc"))
    assert CHECK not in checks(order_cards(resources, draft("A12AA04", rid="caco3")))


@pytest.mark.parametrize("locale", LOCALES)
def test_risk_branch_shows_the_risk_factors_and_names_them_in_the_summary(locale: str) -> None:
    # Warfarin and calcitriol: two major risk factors other than the drafted binder.
    resources = dialysis(9.2, 4.0, medication("B01AA03", rid="warf"), medication("A11CC04", rid="calc"))
    card = the_card(order_cards(resources, draft("A12AA04", rid="caco3"), locale=locale), CHECK)
    facts = [line for line in text(card).splitlines() if line.startswith("- ")]
    assert any(("Warfarine" if locale == "fr" else "Warfarin") in line for line in facts)
    assert ("facteurs de risque de calciphylaxie" if locale == "fr"
            else "calciphylaxis risk factors") in card.summary


@pytest.mark.parametrize("locale", LOCALES)
def test_summary_names_the_ca_x_p_criterion(locale: str) -> None:
    card = the_card(order_cards(dialysis(10.0, 7.5), draft("A12AA04", rid="caco3"), locale=locale), CHECK)
    assert ("produit phosphocalcique élevé" if locale == "fr" else "Ca × P above the target") in card.summary
    assert ("hypercalcémie" not in card.summary) if locale == "fr" else ("hypercalcaemia" not in card.summary)


# ----------------------------------------------------------------------------- finding 13: ionised calcium


@pytest.mark.parametrize("locale", LOCALES)
def test_high_ionised_calcium_flags_calcitriol(locale: str) -> None:
    resources = adult(condition("N18.6"), condition("Z99.2"), lab("1995-0", 1.45, "mmol/L"))
    card = the_card(order_cards(resources, draft("A11CC04", rid="calcitriol"), locale=locale), CHECK)
    assert card.indicator == "warning"
    assert ("hypercalcémie" if locale == "fr" else "hypercalcaemia") in card.summary
    assert ("Calcium ionisé" if locale == "fr" else "Ionized calcium") in text(card)


def test_normal_ionised_calcium_counts_as_a_calcium_result() -> None:
    resources = adult(condition("N18.6"), condition("Z99.2"), lab("1995-0", 1.2, "mmol/L"))
    assert order_cards(resources, draft("A11CC04", rid="calcitriol")) == []


# ----------------------------------------------------------------------------- finding 14: nutritional vitamin D


def test_cholecalciferol_at_ca_x_p_59_in_ckd_4_is_silent() -> None:
    resources = adult(condition("N18.4"), lab("17861-6", 9.8, "mg/dL"), lab("2777-1", 6.0, "mg/dL"),
                      lab("1751-7", 4.0, "g/dL"))
    assert order_cards(resources, draft("A11CC05", rid="d3")) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_cholecalciferol_with_hypercalcaemia_is_flagged_as_nutritional_vitamin_d(locale: str) -> None:
    resources = adult(lab("17861-6", 11.5, "mg/dL"), lab("1751-7", 4.0, "g/dL"))
    card = the_card(order_cards(resources, draft("A11CC05", rid="d3"), locale=locale),
                    "nutritional-vitamin-d-high-calcium")
    assert ("vitamine D native" if locale == "fr" else "nutritional vitamin D") in card.summary
    assert "active" not in text(card)
    assert ("chélateur" not in text(card)) if locale == "fr" else ("binder" not in text(card))


# ----------------------------------------------------------------------------- finding 20: binder advice


@pytest.mark.parametrize("locale", LOCALES)
def test_calcitriol_card_gives_no_binder_advice_but_the_binder_card_does(locale: str) -> None:
    phrase = "Préférer un chélateur non calcique" if locale == "fr" else "Prefer a non-calcium binder"
    calcitriol = the_card(order_cards(dialysis(10.0, 7.5), draft("A11CC04", rid="calc"), locale=locale),
                          CHECK)
    assert phrase not in text(calcitriol)
    binder = the_card(order_cards(dialysis(10.0, 7.5), draft("A12AA04", rid="caco3"), locale=locale), CHECK)
    assert phrase in text(binder)


# ----------------------------------------------------------------------------- findings 3-4: the sevelamer swap


@pytest.mark.parametrize("locale", LOCALES)
def test_buffered_aspirin_is_named_in_full_and_never_swapped(locale: str) -> None:
    aspirin = draft("1722689", "rxnorm", rid="asa", text="aspirin 81 MG / calcium carbonate 777 MG Oral Tablet")
    card = the_card(order_cards(dialysis(10.0, 7.5), aspirin, locale=locale), CHECK)
    assert not swap_offered(card)
    assert ("Aspirine / carbonate de calcium" if locale == "fr" else "Aspirin / calcium carbonate") in card.summary


def test_a_draft_with_a_second_ingredient_is_not_swapped() -> None:
    atc = "http://www.whocc.no/atc"
    two = {"resourceType": "Medication", "id": "combo",
           "ingredient": [{"itemCodeableConcept": {"coding": [{"system": atc, "code": "A12AA04"}]}},
                          {"itemCodeableConcept": {"coding": [{"system": atc, "code": "A11CC05"}]}}]}
    order = {**draft(None, rid="combo-order"), "medicationReference": {"reference": "#combo"}, "contained": [two]}
    del order["medicationCodeableConcept"]
    card = the_card(order_cards(dialysis(10.0, 7.5), order), CHECK)
    assert not swap_offered(card)
    assert "Calcium carbonate / Cholecalciferol" in text(card)


def test_hypercalcaemic_patient_without_ckd_is_not_offered_sevelamer() -> None:
    resources = adult(lab("17861-6", 11.5, "mg/dL"), lab("1751-7", 4.0, "g/dL"),
                      lab("98979-8", 90, "mL/min/{1.73_m2}"))
    card = the_card(order_cards(resources, draft("A12AA04", rid="caco3")), CHECK)
    assert actions(card) == [("delete", "MedicationRequest/caco3")]


def test_dialysis_patient_on_lanthanum_is_not_offered_sevelamer() -> None:
    resources = dialysis(10.0, 7.5, medication("V03AE03", rid="lanthanum"))
    card = the_card(order_cards(resources, draft("A12AA04", rid="caco3")), CHECK)
    assert not swap_offered(card)
    assert actions(card) == [("delete", "MedicationRequest/caco3")]


def test_dialysis_patient_without_a_non_calcium_binder_is_offered_sevelamer() -> None:
    card = the_card(order_cards(dialysis(10.0, 7.5), draft("A12AA04", rid="caco3")), CHECK)
    assert swap_offered(card)
