"""Issue 15: each order check, positive and negative, from FHIR input to the card, in English and French.

The patients are built from FHIR resources (``tests/fhir_builders.py``, codes from the terminology tables) or
taken from the issue-10 safety bundles with the drug in question moved into ``draftOrders``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.conftest import fixture_resources
from tests.hooks.engine.order_support import LOCALES, actions, checks, draft, egfr, order_cards, text, the_card

NEONATE_BIRTH = "2026-11-11"  # 10 days old on 2026-11-21 (tests.fhir_builders.NOW)
INFANT_BIRTH = "2026-10-12"  # 40 days old
OLDER_INFANT_BIRTH = "2026-06-01"  # 173 days old: past the EU premature-infant window (29-133 days)


def adult(pid: str = "p1", gender: str = "male", birth: str = "1960-05-01") -> dict[str, Any]:
    return patient(pid, birth=birth, gender=gender)


# ----------------------------------------------------------------------------- neonatal ceftriaxone-calcium


def neonate(*medications: dict[str, Any], birth: str | None = NEONATE_BIRTH) -> list[dict[str, Any]]:
    baby = patient("nb", birth=birth or "2026-11-11", gender="male")
    if birth is None:
        del baby["birthDate"]
    return [baby, *medications]


@pytest.mark.parametrize("locale", LOCALES)
def test_ceftriaxone_ordered_for_a_neonate_on_iv_calcium_is_critical(locale: str) -> None:
    resources = neonate(medication("A12AA03", pid="nb", rid="ca-infusion", days_ago=1))
    cards = order_cards(resources, draft("J01DD04", pid="nb", rid="cef"), pid="nb", locale=locale)
    card = the_card(cards, "neonatal-ceftriaxone-calcium")
    assert card.indicator == "critical"
    assert actions(card) == [("delete", "MedicationRequest/cef")]
    assert card.overrideReasons
    if locale == "fr":
        assert "nouveau-né" in card.summary
        assert "10 jours de vie" in text(card)
        assert "Gluconate de calcium" in text(card)
        assert "Why" not in text(card)
    else:
        assert "neonate" in card.summary
        assert "10 days old" in text(card)
        assert "Calcium gluconate" in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_iv_calcium_ordered_for_a_neonate_on_ceftriaxone_says_replace_ceftriaxone(locale: str) -> None:
    resources = neonate(medication("J01DD04", pid="nb", rid="cef-current", days_ago=1))
    cards = order_cards(resources, draft("A12AA03", pid="nb", rid="ca"), pid="nb", locale=locale)
    card = the_card(cards, "neonatal-ceftriaxone-calcium")
    assert card.indicator == "critical"
    # The drug to replace is ceftriaxone (addendum S28 a): removing the calcium is not the suggestion.
    assert actions(card) == []
    assert card.summary.startswith("Ceftriaxone")
    assert ("remplacer" if locale == "fr" else "replace") in text(card)


def test_both_drugs_in_one_signing_give_one_card_on_the_ceftriaxone() -> None:
    cards = order_cards(neonate(), draft("A12AA03", pid="nb", rid="ca"), draft("J01DD04", pid="nb", rid="cef"),
                        pid="nb")
    assert checks(cards) == ["neonatal-ceftriaxone-calcium"]
    assert actions(cards[0]) == [("delete", "MedicationRequest/cef")]


def test_order_select_of_the_calcium_names_the_unselected_ceftriaxone_draft() -> None:
    cards = order_cards(neonate(), draft("A12AA03", pid="nb", rid="ca"), draft("J01DD04", pid="nb", rid="cef"),
                        pid="nb", hook="order-select", selections=["MedicationRequest/ca"])
    card = the_card(cards, "neonatal-ceftriaxone-calcium")
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["order"] == "MedicationRequest/ca"


def test_calcium_infusion_ordered_as_a_coded_service_request_is_checked() -> None:
    infusion = {"resourceType": "ServiceRequest", "id": "pn", "status": "draft", "intent": "order",
                "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A12AA03"}],
                         "text": "Nutrition parentérale avec gluconate de calcium"},
                "subject": {"reference": "Patient/nb"}}
    resources = neonate(medication("J01DD04", pid="nb", rid="cef-current", days_ago=1))
    cards = order_cards(resources, infusion, pid="nb", locale="fr")
    card = the_card(cards, "neonatal-ceftriaxone-calcium")
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["order"] == "ServiceRequest/pn"


@pytest.mark.parametrize("locale", LOCALES)
def test_ceftriaxone_after_28_days_gives_no_neonatal_card(locale: str) -> None:
    resources = neonate(medication("A12AA03", pid="nb", rid="ca-infusion", days_ago=1), birth=OLDER_INFANT_BIRTH)
    cards = order_cards(resources, draft("J01DD04", pid="nb", rid="cef"), pid="nb", locale=locale)
    assert "neonatal-ceftriaxone-calcium" not in checks(cards)


@pytest.mark.parametrize("locale", LOCALES)
def test_unknown_age_with_iv_calcium_says_age_not_recorded(locale: str) -> None:
    resources = neonate(medication("A12AA03", pid="nb", rid="ca-infusion", days_ago=1), birth=None)
    (card,) = order_cards(resources, draft("J01DD04", pid="nb", rid="cef"), pid="nb", locale=locale)
    assert card.indicator == "warning"
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["notRecorded"] == "birth-date"
    assert ("âge non renseigné" if locale == "fr" else "age not recorded") in card.summary


# ----------------------------------------------------------------------------- calcium and vitamin D


def dialysis_patient(calcium: float, phosphate: float, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [adult(), condition("N18.6"), condition("Z99.2"), lab("17861-6", calcium, "mg/dL"),
            lab("2777-1", phosphate, "mg/dL"), lab("1751-7", 4.0, "g/dL"), *extra]


@pytest.mark.parametrize("locale", LOCALES)
def test_calcium_binder_with_ca_x_p_75_on_dialysis_offers_a_non_calcium_binder(locale: str) -> None:
    cards = order_cards(dialysis_patient(10.0, 7.5), draft("A12AA04", rid="caco3"), locale=locale)
    card = the_card(cards, "calcium-vitamin-d-high-calcium")
    assert card.indicator == "warning"
    assert ("75,0 mmol" in text(card) or "Ca × P" in text(card)) if locale == "fr" else "Ca × P" in text(card)
    assert card.selectionBehavior == "at-most-one"
    swap, remove = card.suggestions or []
    assert [a.type for a in swap.actions or ()] == ["delete", "create"]
    created = (swap.actions or [])[1].resource
    assert created is not None
    MedicationRequest.model_validate(created)  # valid R4 (R4B model)
    assert created["status"] == "draft"
    assert created["subject"] == {"reference": "Patient/p1"}
    assert created["medicationCodeableConcept"]["coding"][0]["code"] == "V03AE02"  # sevelamer, VERIFIED-secondary
    assert ("sévélamer" if locale == "fr" else "sevelamer") in swap.label.lower()
    assert [a.type for a in remove.actions or ()] == ["delete"]


@pytest.mark.parametrize("locale", LOCALES)
def test_calcium_binder_with_normal_calcium_and_phosphate_is_silent(locale: str) -> None:
    assert order_cards(dialysis_patient(9.0, 4.0), draft("A12AA04", rid="caco3"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_calcitriol_in_hypoparathyroidism_with_high_calcium_is_re_titration_not_stop(locale: str) -> None:
    resources = [adult(gender="male"), condition("E20.0"), lab("17861-6", 11.6, "mg/dL"), lab("1751-7", 4.0, "g/dL")]
    card = the_card(order_cards(resources, draft("A11CC04", rid="calcitriol"), locale=locale),
                    "calcium-vitamin-d-high-calcium")
    assert card.suggestions is None  # replacement therapy: no delete, no swap (addendum S29)
    assert ("substitutif" if locale == "fr" else "replacement therapy") in text(card)


# ----------------------------------------------------------------------------- warfarin and calciphylaxis


def without(resources: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    return [r for r in copy.deepcopy(resources) if r.get("id") != rid]


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_ordered_with_calciphylaxis_is_flagged_with_a_delete(locale: str) -> None:
    pid, resources = fixture_resources("calciphylaxis_dialysis_warfarin.json")
    cards = order_cards(without(resources, "cal-warfarin"), draft("B01AA03", pid=pid, rid="warf"), pid=pid,
                        locale=locale)
    card = the_card(cards, "warfarin-calciphylaxis")
    assert actions(card) == [("delete", "MedicationRequest/warf")]
    assert ("Calciphylaxie" if locale == "fr" else "Calciphylaxis") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_with_a_mechanical_valve_is_a_specialist_decision_without_switch(locale: str) -> None:
    pid, resources = fixture_resources("safety_mechanical_valve_calciphylaxis_warfarin.json")
    cards = order_cards(without(resources, "safe-valve-med6"), draft("B01AA03", pid=pid, rid="warf"), pid=pid,
                        locale=locale)
    card = the_card(cards, "warfarin-calciphylaxis")
    assert card.suggestions is None
    assert ("Valve mécanique" if locale == "fr" else "Mechanical valve") in text(card)
    assert ("AOD" if locale == "fr" else "DOAC") in text(card)
    # The valve that changed the advice is among the decisive facts, and calciphylaxis is said once.
    facts = [line for line in text(card).splitlines() if line.startswith("- ")]
    assert any("valve" in line.lower() for line in facts)
    assert sum(line.startswith(("- Calciphylaxis", "- Calciphylaxie")) for line in facts) == 1


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_for_atrial_fibrillation_without_calciphylaxis_is_silent(locale: str) -> None:
    resources = [adult(), condition("I48.91"), *normal_chemistry()]
    assert order_cards(resources, draft("B01AA03", rid="warf"), locale=locale) == []


# ----------------------------------------------------------------------------- bisphosphonates


@pytest.mark.parametrize("locale", LOCALES)
def test_alendronate_at_egfr_20_is_below_the_label_limit(locale: str) -> None:
    cards = order_cards([adult(), egfr(20)], draft("M05BA04", rid="alen"), locale=locale)
    card = the_card(cards, "bisphosphonate-renal")
    assert actions(card) == [("delete", "MedicationRequest/alen")]
    assert ("DFG" if locale == "fr" else "eGFR") in text(card)
    assert "20" in text(card)
    # No weight: the CrCl limit was checked on the eGFR, and the card says so (addendum S36).
    assert ("approximation" in text(card))


@pytest.mark.parametrize("locale", LOCALES)
def test_alendronate_at_egfr_80_is_silent(locale: str) -> None:
    assert order_cards([adult(), egfr(80)], draft("M05BA04", rid="alen"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_alendronate_without_kidney_function_says_not_known(locale: str) -> None:
    (card,) = order_cards([adult()], draft("M05BA04", rid="alen"), locale=locale)
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["notRecorded"] == "renal-function"
    assert ("fonction rénale inconnue" if locale == "fr" else "kidney function not known") in card.summary


# ----------------------------------------------------------------------------- colchicine


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_added_to_clarithromycin_is_flagged(locale: str) -> None:
    resources = [adult(), egfr(90), medication("J01FA09", rid="clari", days_ago=2)]
    card = the_card(order_cards(resources, draft("M04AC01", rid="colch"), locale=locale),
                    "colchicine-strong-inhibitor")
    assert "clarithromycin" in card.summary.lower() or "clarithromycine" in card.summary.lower()
    assert actions(card) == [("delete", "MedicationRequest/colch")]


@pytest.mark.parametrize("locale", LOCALES)
def test_clarithromycin_added_to_colchicine_is_flagged_on_the_antibiotic(locale: str) -> None:
    resources = [adult(), egfr(90), medication("M04AC01", rid="colch-current", days_ago=40)]
    card = the_card(order_cards(resources, draft("J01FA09", rid="clari"), locale=locale),
                    "colchicine-strong-inhibitor")
    assert card.summary.startswith("Colchicine")
    assert actions(card) == [("delete", "MedicationRequest/clari")]
    assert ("Le patient prend de la colchicine" if locale == "fr" else "The patient takes colchicine") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_alone_with_normal_kidneys_is_silent(locale: str) -> None:
    assert order_cards([adult(), egfr(90)], draft("M04AC01", rid="colch"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_under_crcl_30_is_flagged(locale: str) -> None:
    resources = [adult(), lab("35591-7", 22, "mL/min")]
    card = the_card(order_cards(resources, draft("M04AC01", rid="colch"), locale=locale), "colchicine-renal")
    assert ("ClCr" if locale == "fr" else "CrCl") in card.summary


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_at_crcl_80_is_silent(locale: str) -> None:
    assert order_cards([adult(), lab("35591-7", 80, "mL/min")], draft("M04AC01", rid="colch"), locale=locale) == []


# ----------------------------------------------------------------------------- tetracyclines


@pytest.mark.parametrize("locale", LOCALES)
def test_minocycline_for_a_six_year_old_is_flagged(locale: str) -> None:
    card = the_card(order_cards([patient("p1", birth="2020-06-01", gender="male")], draft("J01AA08", rid="mino"),
                                locale=locale), "tetracycline-child-pregnancy")
    assert ("- 6 ans" if locale == "fr" else "- Age 6") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_minocycline_in_pregnancy_is_flagged(locale: str) -> None:
    resources = [patient("p1", birth="1994-03-01"), condition("Z34.00")]
    card = the_card(order_cards(resources, draft("J01AA08", rid="mino"), locale=locale),
                    "tetracycline-child-pregnancy")
    assert ("- Enceinte, 22/10/2026" if locale == "fr" else "- Pregnant, 22 Oct 2026") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_minocycline_for_an_adult_man_is_silent(locale: str) -> None:
    assert order_cards([adult()], draft("J01AA08", rid="mino"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_minocycline_for_a_woman_without_pregnancy_data_names_it(locale: str) -> None:
    (card,) = order_cards([patient("p1", birth="1994-03-01")], draft("J01AA08", rid="mino"), locale=locale)
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["notRecorded"] == "pregnancy"
    assert ("grossesse non renseigné" if locale == "fr" else "pregnancy status not recorded") in card.summary


# ----------------------------------------------------------------------------- aluminium, duplicates


@pytest.mark.parametrize("locale", LOCALES)
def test_aluminium_hydroxide_in_ckd_4_offers_sevelamer(locale: str) -> None:
    cards = order_cards([adult(), condition("N18.4"), egfr(25)], draft("A02AB01", rid="alu"), locale=locale)
    card = the_card(cards, "aluminium-ckd")
    assert actions(card)[:2] == [("delete", "MedicationRequest/alu"), ("create", None)]


@pytest.mark.parametrize("locale", LOCALES)
def test_aluminium_hydroxide_with_normal_kidneys_is_silent(locale: str) -> None:
    assert order_cards([adult(), egfr(95)], draft("A02AB01", rid="alu"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_a_second_diltiazem_order_is_a_duplicate(locale: str) -> None:
    resources = [adult(), medication("C08DB01", rid="dilt-current", days_ago=100)]
    card = the_card(order_cards(resources, draft("C08DB01", rid="dilt"), locale=locale), "duplicate-therapy")
    assert ("déjà prescrit" if locale == "fr" else "already prescribed") in card.summary


@pytest.mark.parametrize("locale", LOCALES)
def test_a_first_diltiazem_order_is_silent(locale: str) -> None:
    assert order_cards([adult()], draft("C08DB01", rid="dilt"), locale=locale) == []


# ----------------------------------------------------------------------------- the response as a whole


def test_an_order_no_check_knows_is_silent() -> None:
    amoxicillin = draft("617993", "rxnorm", rid="amox", text="Amoxicillin 120 MG/ML oral suspension")
    assert order_cards(dialysis_patient(10.0, 7.5), amoxicillin) == []
    # A drug the service knows but no check is about (prednisone) is silent too.
    assert order_cards(dialysis_patient(10.0, 7.5), draft("H02AB07", rid="pred")) == []


def test_hostile_order_text_never_reaches_the_card_markdown() -> None:
    hostile = draft(None, rid="cef", pid="nb",
                    text="ceftriaxone](javascript:alert(1)) <img src=x onerror=alert(1)>")
    resources = neonate(medication("A12AA03", pid="nb", rid="ca-infusion", days_ago=1))
    (card,) = order_cards(resources, hostile, pid="nb")
    dumped = str(card.model_dump())
    assert "javascript" not in dumped
    assert "<img" not in dumped
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["check"] == "neonatal-ceftriaxone-calcium"
