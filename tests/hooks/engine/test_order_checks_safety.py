"""Safety rules at the moment of ordering, beyond issue 15's list: warfarin and bisphosphonates in pregnancy (brief
§6f S20, addendum S27) and DOACs with valve disease (addendum S26 a, d, e, f). Positive and negative, from FHIR
input to the card, in English and French.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, patient
from tests.hooks.engine.order_support import (
    LOCALES,
    WOMAN_32,
    actions,
    checks,
    draft,
    egfr,
    man,
    not_recorded,
    order_cards,
    pregnant_woman,
    text,
    the_card,
)

APIXABAN = "B01AF02"
DABIGATRAN = "B01AE07"
WARFARIN = "B01AA03"
ZOLEDRONIC_ACID = "M05BA08"


# ----------------------------------------------------------------------------- S20 / S27: pregnancy


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_ordered_in_pregnancy_is_contraindicated_with_a_delete(locale: str) -> None:
    card = the_card(order_cards(pregnant_woman(), draft(WARFARIN, rid="warf"), locale=locale), "warfarin-pregnancy")
    assert card.indicator == "warning"
    assert ("contre-indiquée" if locale == "fr" else "contraindicated") in card.summary
    assert ("- Enceinte, 22/10/2026" if locale == "fr" else "- Pregnant, 22 Oct 2026") in text(card)
    assert actions(card) == [("delete", "MedicationRequest/warf")]


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_in_pregnancy_with_a_mechanical_valve_is_a_specialist_decision(locale: str) -> None:
    resources = [*pregnant_woman(), condition("699347000", "snomed")]
    card = the_card(order_cards(resources, draft(WARFARIN, rid="warf"), locale=locale), "warfarin-pregnancy")
    # Addendum S26: pregnancy with a mechanical valve is not an automatic contraindication; never a DOAC.
    assert ("décision spécialisée" if locale == "fr" else "specialist decision") in card.summary
    assert card.suggestions is None
    assert ("AOD" if locale == "fr" else "DOAC") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_in_pregnancy_with_a_valve_of_unrecorded_type_stays_contraindicated(locale: str) -> None:
    # Z95.2 alone does not say the valve is mechanical: the contraindication is not relaxed, the type is asked.
    resources = [*pregnant_woman(), condition("Z95.2")]
    card = the_card(order_cards(resources, draft(WARFARIN, rid="warf"), locale=locale), "warfarin-pregnancy")
    assert ("contre-indiquée" if locale == "fr" else "contraindicated") in card.summary
    assert ("vérifier si elle est mécanique" if locale == "fr" else "check whether it is mechanical") in text(card)
    assert actions(card) == [("delete", "MedicationRequest/warf")]


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_for_a_woman_without_pregnancy_data_names_it(locale: str) -> None:
    (card,) = order_cards([patient("p1", birth=WOMAN_32)], draft(WARFARIN, rid="warf"), locale=locale)
    assert not_recorded(card) == "pregnancy"
    assert ("grossesse non renseigné" if locale == "fr" else "pregnancy status not recorded") in card.summary
    assert ("warfarine contre-indiquée" if locale == "fr" else "warfarin is contraindicated") in text(card)
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_for_a_man_or_a_woman_not_pregnant_is_silent(locale: str) -> None:
    assert order_cards(man(), draft(WARFARIN, rid="warf"), locale=locale) == []
    not_pregnant = [patient("p1", birth=WOMAN_32), condition("60001007", "snomed")]
    assert order_cards(not_pregnant, draft(WARFARIN, rid="warf"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_zoledronic_acid_ordered_in_pregnancy_is_to_be_avoided(locale: str) -> None:
    card = the_card(order_cards(pregnant_woman(), draft(ZOLEDRONIC_ACID, rid="zol"), locale=locale),
                    "bisphosphonate-pregnancy")
    assert ("à éviter" if locale == "fr" else "avoid") in card.summary
    assert ("embryofœtale" if locale == "fr" else "embryo-fetal") in text(card)
    assert actions(card) == [("delete", "MedicationRequest/zol")]


@pytest.mark.parametrize("locale", LOCALES)
def test_zoledronic_acid_for_a_man_is_not_a_pregnancy_card(locale: str) -> None:
    assert order_cards(man(egfr(90)), draft(ZOLEDRONIC_ACID, rid="zol"), locale=locale) == []


# ----------------------------------------------------------------------------- S26: DOACs and valves


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("valve", [("699347000", "snomed"), ("Z95.2", "icd10cm")], ids=["mechanical", "Z95.2"])
def test_a_doac_ordered_with_a_mechanical_valve_is_contraindicated(locale: str, valve: tuple[str, str]) -> None:
    # S26 (f): Z95.2 alone counts as a mechanical valve unless a bioprosthesis is shown.
    resources = man(condition(valve[0], valve[1]))
    card = the_card(order_cards(resources, draft(APIXABAN, rid="apix"), locale=locale), "doac-mechanical-valve")
    assert card.indicator == "warning"
    assert ("valve cardiaque mécanique" if locale == "fr" else "mechanical heart valve") in card.summary
    assert "RE-ALIGN" in text(card)
    assert ("thromboses de prothèse" if locale == "fr" else "valve thrombosis") in text(card)
    assert actions(card) == [("delete", "MedicationRequest/apix")]
    assert card.source.url == "https://www.fda.gov/Drugs/DrugSafety/ucm332912.htm"


@pytest.mark.parametrize("locale", LOCALES)
def test_a_valve_of_unrecorded_type_is_one_fact_on_the_card(locale: str) -> None:
    card = the_card(order_cards(man(condition("Z95.2")), draft(APIXABAN, rid="apix"), locale=locale),
                    "doac-mechanical-valve")
    facts = [line for line in text(card).splitlines() if line.startswith("- ")]
    # The coded valve says what it is; the "mechanical valve" it is counted as is not a second fact.
    assert len(facts) == 1
    assert ("type non codé" if locale == "fr" else "type not coded") in facts[0]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("clinical", ["active", "resolved"])
def test_dabigatran_with_a_biological_valve_is_a_caution_without_removal(locale: str, clinical: str) -> None:
    # An implanted valve does not resolve: a tidied-up problem list still shows it.
    resources = man(condition("Z95.3", clinical=clinical))
    cards = order_cards(resources, draft(DABIGATRAN, rid="dabi"), locale=locale)
    assert checks(cards) == ["doac-biological-valve"]
    (card,) = cards
    assert ("3 premiers mois" if locale == "fr" else "first 3 months") in card.summary
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_a_doac_with_atrial_fibrillation_and_mitral_stenosis_asks_for_the_severity(locale: str) -> None:
    resources = man(condition("I48.91"), condition("I34.2"))
    card = the_card(order_cards(resources, draft(APIXABAN, rid="apix"), locale=locale), "doac-mitral-stenosis")
    assert ("rétrécissement mitral" if locale == "fr" else "mitral stenosis") in card.summary
    assert ("échocardiographie" if locale == "fr" else "echocardiogram") in text(card)
    assert actions(card) == []
    # The ESC guideline, not the EHRA table, is the source of this one.
    assert card.source.url == "https://doi.org/10.4244/EIJ-E-21-00009"


def test_both_valve_cautions_are_given_and_a_mechanical_valve_says_it_alone() -> None:
    af_ms = (condition("I48.91"), condition("I34.2"))
    both = order_cards(man(condition("Z95.3"), *af_ms), draft(APIXABAN, rid="apix"))
    assert sorted(checks(both)) == ["doac-biological-valve", "doac-mitral-stenosis"]
    mechanical = order_cards(man(condition("699347000", "snomed"), *af_ms), draft(APIXABAN, rid="apix"))
    assert checks(mechanical) == ["doac-mechanical-valve"]


@pytest.mark.parametrize("locale", LOCALES)
def test_a_doac_for_atrial_fibrillation_without_valve_disease_is_silent(locale: str) -> None:
    # S26 (c): in AF without a valve problem the DOAC is the recommended choice.
    assert order_cards(man(condition("I48.91")), draft(APIXABAN, rid="apix"), locale=locale) == []
    # Mitral stenosis without AF: the S26 (d) recommendation is about AF.
    assert order_cards(man(condition("I34.2")), draft(APIXABAN, rid="apix"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_a_doac_in_pregnancy_says_the_service_did_not_check_it(locale: str) -> None:
    # Addendum S27: pregnancy data for DOACs were not verified; silence would read as "checked".
    (card,) = order_cards(pregnant_woman(), draft(APIXABAN, rid="apix"), locale=locale)
    assert checks([card]) == ["doac-pregnancy-not-checked"]
    assert card.indicator == "info"
    assert ("non vérifié par ce service" if locale == "fr" else "not checked by this service") in card.summary
    assert actions(card) == []
    # Not named for a woman without pregnancy data: S27 asks it for contraindicated drugs only.
    assert order_cards([patient("p1", birth=WOMAN_32)], draft(APIXABAN, rid="apix"), locale=locale) == []


# ----------------------------------------------------------------------------- drafts the service cannot read


def unreadable_drug(rid: str = "bad") -> dict[str, Any]:
    """A draft whose medication is invalid where the drug is named (a coding sent as a bare string)."""
    order = draft(WARFARIN, rid=rid)
    order["medicationCodeableConcept"] = {"coding": "B01AA03"}
    return order


@pytest.mark.parametrize("locale", LOCALES)
def test_a_draft_whose_drug_cannot_be_read_says_it_was_not_checked(locale: str) -> None:
    (card,) = order_cards(pregnant_woman(), unreadable_drug(), locale=locale)
    assert card.indicator == "info"
    assert ("non vérifiée" if locale == "fr" else "not checked") in card.summary
    assert ("Vérifier la prescription" if locale == "fr" else "Check the order before signing") in text(card)
    assert card.suggestions is None
    assert card.extension == {"calcinosis-cds": {"kind": "order-safety", "check": "draft-not-read",
                                                 "order": "MedicationRequest/bad", "notRead": "malformed-resource"}}
    # Never the sender's text or an internal id in what the clinician reads.
    assert "B01AA03" not in text(card)
    assert "MedicationRequest" not in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_among_several_drafts_the_unread_one_is_named_by_its_place(locale: str) -> None:
    cards = order_cards(man(), draft(APIXABAN, rid="apix"), unreadable_drug(), locale=locale)
    (card,) = cards
    assert ("prescription 2 sur 2" if locale == "fr" else "draft order 2 of 2") in text(card)


def test_a_medication_reference_not_sent_and_without_a_name_is_not_checked() -> None:
    order = draft(None, rid="ref")
    order.pop("medicationCodeableConcept", None)
    order["medicationReference"] = {"reference": "Medication/not-sent"}
    (card,) = order_cards(man(), order)
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["notRead"] == "unresolved-medication"
    # With a display, the drug is read by its name: checked, and silent here (a man, no valve).
    order["medicationReference"]["display"] = "apixaban 5 mg tablet"
    assert order_cards(man(), order) == []
    assert checks(order_cards(man(condition("Z95.2")), order)) == ["doac-mechanical-valve"]
    assert "counts as mechanical" in text(order_cards(man(condition("Z95.2")), order)[0])


@pytest.mark.parametrize("locale", LOCALES)
def test_an_invalid_dose_does_not_hide_the_drug(locale: str) -> None:
    # The route sent as a bare string is invalid: the drug is still read and checked.
    order = {**draft(WARFARIN, rid="warf"), "dosageInstruction": [{"route": "per os"}]}
    card = the_card(order_cards(pregnant_woman(), order, locale=locale), "warfarin-pregnancy")
    assert actions(card) == [("delete", "MedicationRequest/warf")]


def test_an_unread_draft_is_in_the_audit_record() -> None:
    from hooks.engine.order_service import assess_orders, read_orders
    from tests.fhir_builders import NOW
    from tests.hooks.engine.order_support import draft_bundle

    context = {"patientId": "p1", "draftOrders": draft_bundle(unreadable_drug()), "selections": []}
    to_check, every = read_orders("order-sign", context, ("en", "fr"))
    cards, outcome = assess_orders(man(), patient_id="p1", to_check=to_check, all_drafts=every, now=NOW,
                                   locale="en", seed="orders")
    assert [c.summary for c in cards] == ["Draft medication order not identified: not checked"]
    assert outcome.rules_fired == ["order:draft-not-read"]
    assert [f["concept"] for f in outcome.facts_used] == ["malformed-resource"]
    assert outcome.facts_used[0]["reference"] == "MedicationRequest/bad"


def test_a_drug_read_but_not_known_is_not_called_unidentified() -> None:
    # Paracetamol with an invalid route, or named by a Medication not sent but with a display: the drug was read.
    paracetamol = {**draft(None, rid="para", text="Paracétamol 1 g comprimé"),
                   "dosageInstruction": [{"route": "per os"}]}
    assert order_cards(man(), paracetamol) == []
    by_name = draft(None, rid="ref")
    by_name.pop("medicationCodeableConcept", None)
    by_name["medicationReference"] = {"reference": "Medication/not-sent", "display": "paracetamol 1 g tablet"}
    assert order_cards(man(), by_name) == []


def test_an_invalid_date_or_status_does_not_hide_the_drug() -> None:
    for bad in ({"authoredOn": 20261121}, {"status": 3}):
        cards = order_cards(pregnant_woman(), {**draft(WARFARIN, rid="warf"), **bad})
        assert checks(cards) == ["warfarin-pregnancy"], bad


def test_two_unidentified_drafts_without_ids_are_two_cards() -> None:
    first, second = unreadable_drug(), unreadable_drug()
    del first["id"], second["id"]
    cards = order_cards(man(), first, second)
    assert len({c.uuid for c in cards}) == 2
    assert [c.extension["calcinosis-cds"]["order"] for c in cards if c.extension] == ["MedicationRequest"] * 2


def test_the_place_of_a_draft_does_not_count_the_patient_or_medication_entries() -> None:
    from tests.hooks.engine.order_support import draft_bundle

    bundle = draft_bundle(draft(APIXABAN, rid="apix"), unreadable_drug())
    bundle["entry"].insert(0, {"resource": {"resourceType": "Patient", "id": "p1"}})
    bundle["entry"].insert(2, {"resource": {"resourceType": "Medication", "id": "m1"}})
    from hooks.engine.order_service import assess_orders, read_orders
    from tests.fhir_builders import NOW

    to_check, every = read_orders("order-sign", {"patientId": "p1", "draftOrders": bundle, "selections": []},
                                  ("en", "fr"))
    cards, _ = assess_orders(man(), patient_id="p1", to_check=to_check, all_drafts=every, now=NOW, locale="en",
                             seed="orders")
    assert checks(cards) == ["draft-not-read"]
    assert "draft order 2 of 2" in text(cards[0])


def test_a_biological_valve_beside_z95_2_is_not_counted_as_mechanical() -> None:
    resources = [*pregnant_woman(), condition("Z95.2"), condition("Z95.3")]
    warfarin = the_card(order_cards(resources, draft(WARFARIN, rid="warf")), "warfarin-pregnancy")
    assert "specialist decision" not in warfarin.summary
    assert actions(warfarin) == [("delete", "MedicationRequest/warf")]
    assert "doac-biological-valve" in checks(order_cards(man(condition("Z95.2"), condition("Z95.3")),
                                                         draft(APIXABAN, rid="apix")))


def test_a_refuted_mechanical_valve_is_no_valve() -> None:
    refuted = condition("699347000", "snomed")
    refuted["verificationStatus"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]}
    assert order_cards(man(refuted), draft(APIXABAN, rid="apix")) == []


def test_a_readable_order_no_check_knows_stays_silent() -> None:
    # Only a drug that could not be identified gets the card: a known drug no check is about does not.
    assert order_cards(man(), draft("H02AB07", rid="pred")) == []
    # Nor does a cancelled draft that could not be read.
    assert order_cards(man(), {**unreadable_drug(), "status": "cancelled"}) == []
