"""Safety rules at the moment of ordering, beyond issue 15's list: warfarin and bisphosphonates in pregnancy (brief
§6f S20, addendum S27) and DOACs with valve disease (addendum S26 a, d, e, f). Positive and negative, from FHIR
input to the card, in English and French.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.order_support import LOCALES, actions, checks, draft, order_cards, text, the_card

WOMAN_32 = "1994-03-01"  # 32 on 2026-11-21 (tests.fhir_builders.NOW): of child-bearing age (S27)
APIXABAN = "B01AF02"
DABIGATRAN = "B01AE07"
WARFARIN = "B01AA03"
ZOLEDRONIC_ACID = "M05BA08"


def pregnant_woman() -> list[dict[str, Any]]:
    return [patient("p1", birth=WOMAN_32), condition("Z34.00")]


def man(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1", birth="1958-02-01", gender="male"), *extra]


def not_recorded(card: Any) -> str:
    assert card.extension is not None
    return str(card.extension["calcinosis-cds"].get("notRecorded"))


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
    cards = order_cards(man(), draft(ZOLEDRONIC_ACID, rid="zol"), locale=locale)
    assert "bisphosphonate-pregnancy" not in checks(cards)


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


def test_a_readable_order_no_check_knows_stays_silent() -> None:
    # Only a drug that could not be identified gets the card: a known drug no check is about does not.
    assert order_cards(man(), draft("H02AB07", rid="pred")) == []
    # Nor does a cancelled draft that could not be read.
    assert order_cards(man(), {**unreadable_drug(), "status": "cancelled"}) == []


# ----------------------------------------------------------------------------- S34: denosumab


DENOSUMAB = "M05BX04"


def egfr(value: float) -> dict[str, Any]:
    return lab("98979-8", value, "mL/min/{1.73_m2}")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kidneys", ["egfr-20", "dialysis", "coded-stage-4"])
def test_denosumab_in_advanced_ckd_carries_the_boxed_warning(locale: str, kidneys: str) -> None:
    renal = {"egfr-20": [egfr(20)], "dialysis": [condition("Z99.2"), condition("N18.6")],
             "coded-stage-4": [condition("N18.4")]}[kidneys]
    # A normal creatinine would supersede the coded dialysis: the chemistry of a dialysis patient has none.
    chemistry = [r for r in normal_chemistry() if r["code"]["coding"][0]["code"] != "2160-0"]
    card = the_card(order_cards(man(*renal, *chemistry), draft(DENOSUMAB, rid="deno"), locale=locale),
                    "denosumab-hypocalcaemia")
    assert card.indicator == "warning"
    assert ("encadré FDA" if locale == "fr" else "boxed warning") in card.summary
    assert ("chaque semaine le premier mois" if locale == "fr" else "weekly for the first month") in text(card)
    # A caution with its monitoring: the order is not proposed for removal.
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_with_low_calcium_says_correct_it_first(locale: str) -> None:
    chemistry = [r for r in normal_chemistry() if r["code"]["coding"][0]["code"] != "17861-6"]
    resources = man(egfr(75), lab("17861-6", 7.6, "mg/dL"), *chemistry)
    card = the_card(order_cards(resources, draft(DENOSUMAB, rid="deno"), locale=locale), "denosumab-hypocalcaemia")
    assert ("la corriger avant l'injection" if locale == "fr" else "correct it before the injection") in card.summary
    assert "7.6" in text(card) or "7,6" in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_with_low_calcium_in_advanced_ckd_says_both(locale: str) -> None:
    chemistry = [r for r in normal_chemistry() if r["code"]["coding"][0]["code"] not in {"17861-6", "2160-0"}]
    resources = man(egfr(20), lab("17861-6", 7.6, "mg/dL"), *chemistry)
    card = the_card(order_cards(resources, draft(DENOSUMAB, rid="deno"), locale=locale), "denosumab-hypocalcaemia")
    assert ("IRC avancée" if locale == "fr" else "advanced CKD") in card.summary
    assert ("corrigée avant le dénosumab" if locale == "fr" else "corrected before denosumab") in text(card)
    assert ("chaque semaine le premier mois" if locale == "fr" else "weekly for the first month") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_with_hypoparathyroidism_asks_for_checks_after_each_injection(locale: str) -> None:
    resources = man(egfr(75), condition("E20.9"), *normal_chemistry())
    card = the_card(order_cards(resources, draft(DENOSUMAB, rid="deno"), locale=locale), "denosumab-hypocalcaemia")
    assert ("10 à 14 jours" if locale == "fr" else "10-14 days") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_with_normal_kidneys_and_no_calcium_is_a_reminder(locale: str) -> None:
    (card,) = order_cards(man(egfr(75)), draft(DENOSUMAB, rid="deno"), locale=locale)
    assert card.indicator == "info"
    assert ("pas de calcémie récente" if locale == "fr" else "no current calcium result") in card.summary


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_with_normal_kidneys_and_calcium_is_silent(locale: str) -> None:
    assert order_cards(man(egfr(75), *normal_chemistry()), draft(DENOSUMAB, rid="deno"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_denosumab_without_kidney_function_or_calcium_names_both(locale: str) -> None:
    (card,) = order_cards(man(), draft(DENOSUMAB, rid="deno"), locale=locale)
    assert card.indicator == "warning"
    assert card.extension is not None
    assert card.extension["calcinosis-cds"]["notRecordedAll"] == ["renal-function", "calcium"]
    assert ("fonction rénale inconnue" if locale == "fr" else "kidney function not known") in card.summary
    assert ("avant l'injection" if locale == "fr" else "before the injection") in text(card)


# ----------------------------------------------------------------------------- S23: Colchimax and breastfeeding


def colchimax() -> dict[str, Any]:
    return draft(None, rid="colchimax", text="COLCHIMAX cp")


def woman(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1", birth=WOMAN_32), egfr(95), *extra]


BREASTFEEDING = ("866041003", "snomed")


@pytest.mark.parametrize("locale", LOCALES)
def test_colchimax_while_breastfeeding_is_to_be_avoided(locale: str) -> None:
    card = the_card(order_cards(woman(condition(*BREASTFEEDING)), colchimax(), locale=locale),
                    "colchimax-breastfeeding")
    assert ("pendant l'allaitement" if locale == "fr" else "while breastfeeding") in card.summary
    assert ("colchicine seule" if locale == "fr" else "colchicine alone") in text(card)
    assert actions(card) == [("delete", "MedicationRequest/colchimax")]


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_alone_while_breastfeeding_is_not_flagged(locale: str) -> None:
    colchicine = order_cards(woman(condition(*BREASTFEEDING)), draft("M04AC01", rid="colch"), locale=locale)
    assert "colchimax-breastfeeding" not in checks(colchicine)
    assert "colchimax-breastfeeding" not in checks(order_cards(woman(), colchimax(), locale=locale))


# ----------------------------------------------------------------------------- S24, S25: diltiazem


DILTIAZEM = "C08DB01"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("code", ["I44.1", "I44.2", "I49.5"], ids=["second-degree", "third-degree", "sick-sinus"])
def test_diltiazem_with_conduction_disease_and_no_pacemaker_is_contraindicated(locale: str, code: str) -> None:
    card = the_card(order_cards(man(condition(code)), draft(DILTIAZEM, rid="dilt"), locale=locale),
                    "diltiazem-conduction-disease")
    assert ("contre-indiqué" if locale == "fr" else "contraindicated") in card.summary
    assert actions(card) == [("delete", "MedicationRequest/dilt")]


def test_diltiazem_with_a_first_degree_av_block_is_not_contraindicated() -> None:
    assert "diltiazem-conduction-disease" not in checks(order_cards(man(condition("I44.0")),
                                                                   draft(DILTIAZEM, rid="dilt")))


@pytest.mark.parametrize("locale", LOCALES)
def test_diltiazem_with_a_working_pacemaker_is_not_contraindicated(locale: str) -> None:
    cards = order_cards(man(condition("I44.2"), condition("Z95.0")), draft(DILTIAZEM, rid="dilt"), locale=locale)
    assert "diltiazem-conduction-disease" not in checks(cards)


@pytest.mark.parametrize("locale", LOCALES)
def test_diltiazem_ordered_for_a_patient_on_timolol_eye_drops_is_a_caution(locale: str) -> None:
    # Addendum S25: D-BB includes ophthalmic timolol.
    resources = man(medication("10600", "rxnorm", text="Timolol 0.5% eye drops", rid="timolol", days_ago=30))
    card = the_card(order_cards(resources, draft(DILTIAZEM, rid="dilt"), locale=locale), "diltiazem-beta-blocker")
    assert ("timolol" in card.summary.lower())
    assert ("ECG" in text(card))
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_a_beta_blocker_ordered_for_a_patient_on_diltiazem_is_the_same_caution(locale: str) -> None:
    resources = man(medication(DILTIAZEM, rid="dilt-current", days_ago=60))
    card = the_card(order_cards(resources, draft("19484", "rxnorm", rid="biso"), locale=locale),
                    "diltiazem-beta-blocker")
    assert card.summary.startswith("Diltiazem")
    assert ("Le patient prend un inhibiteur calcique" if locale == "fr" else "The patient takes a calcium-channel") \
        in text(card)
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_verapamil_with_a_beta_blocker_is_named_verapamil(locale: str) -> None:
    resources = man(medication("19484", "rxnorm", rid="biso", days_ago=30))
    card = the_card(order_cards(resources, draft("C08DA01", rid="vera"), locale=locale), "diltiazem-beta-blocker")
    assert card.summary.startswith(("Vérapamil", "Verapamil"))
    assert ("vérapamil" if locale == "fr" else "verapamil") in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_diltiazem_with_tacrolimus_asks_for_trough_levels_in_either_order(locale: str) -> None:
    on_tacrolimus = man(medication("L04AD02", rid="tac", days_ago=200))
    card = the_card(order_cards(on_tacrolimus, draft(DILTIAZEM, rid="dilt"), locale=locale),
                    "diltiazem-calcineurin-inhibitor")
    assert ("taux résiduels" if locale == "fr" else "trough levels") in text(card)
    on_diltiazem = man(medication(DILTIAZEM, rid="dilt-current", days_ago=60))
    reverse = the_card(order_cards(on_diltiazem, draft("L04AD02", rid="tac"), locale=locale),
                       "diltiazem-calcineurin-inhibitor")
    assert ("Le patient prend du diltiazem ou du vérapamil" if locale == "fr"
            else "The patient takes diltiazem or verapamil") in text(reverse)


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_with_diltiazem_asks_for_a_lower_dose_in_either_order(locale: str) -> None:
    card = the_card(order_cards(man(medication(DILTIAZEM, rid="dilt", days_ago=20)), draft("M04AC01", rid="colch"),
                                locale=locale), "colchicine-moderate-inhibitor")
    assert ("réduire la dose de colchicine" if locale == "fr" else "reduce the colchicine dose") in card.summary
    assert actions(card) == []
    reverse = the_card(order_cards(man(medication("M04AC01", rid="colch", days_ago=20)), draft(DILTIAZEM, rid="dilt"),
                                   locale=locale), "colchicine-moderate-inhibitor")
    assert ("Le patient prend de la colchicine" if locale == "fr" else "The patient takes colchicine") in text(reverse)


@pytest.mark.parametrize("locale", LOCALES)
def test_diltiazem_alone_for_a_patient_without_these_is_silent(locale: str) -> None:
    assert order_cards(man(), draft(DILTIAZEM, rid="dilt"), locale=locale) == []
    stopped_long_ago = man({**medication("19484", "rxnorm", rid="biso", days_ago=400), "status": "stopped"})
    assert order_cards(stopped_long_ago, draft(DILTIAZEM, rid="dilt"), locale=locale) == []


# ----------------------------------------------------------------------------- S33: teriparatide


TERIPARATIDE = "H05AA02"
OLDER_WOMAN = "1950-04-01"  # 76: outside the 12-55 band, pregnancy not applicable


def older_woman(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1", birth=OLDER_WOMAN), egfr(70), *extra]


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_for_glucocorticoid_osteoporosis_warns_of_calcification(locale: str) -> None:
    # S33: systemic glucocorticoids are a risk factor the label names.
    resources = older_woman(medication("H02AB07", rid="pred", days_ago=120))
    card = the_card(order_cards(resources, draft(TERIPARATIDE, rid="teri"), locale=locale),
                    "teriparatide-calcification")
    assert ("calciphylaxie" if locale == "fr" else "calciphylaxis") in card.summary
    assert ("L'arrêter si une calciphylaxie apparaît" if locale == "fr" else "Stop it if calciphylaxis appears") \
        in text(card)
    assert actions(card) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_with_calcinosis_cutis_warns_of_calcification(locale: str) -> None:
    cards = order_cards(older_woman(condition("L94.2")), draft(TERIPARATIDE, rid="teri"), locale=locale)
    assert "teriparatide-calcification" in checks(cards)


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_with_primary_hyperparathyroidism_is_to_be_avoided(locale: str) -> None:
    card = the_card(order_cards(older_woman(condition("E21.0")), draft(TERIPARATIDE, rid="teri"), locale=locale),
                    "teriparatide-calcification")
    assert ("à éviter" if locale == "fr" else "avoid") in card.summary
    assert actions(card) == [("delete", "MedicationRequest/teri")]


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_in_pregnancy_or_on_dialysis_is_contraindicated(locale: str) -> None:
    pregnant = the_card(order_cards(pregnant_woman(), draft(TERIPARATIDE, rid="teri"), locale=locale),
                        "teriparatide-calcification")
    assert ("grossesse ou l'allaitement" if locale == "fr" else "pregnancy or breastfeeding") in pregnant.summary
    on_dialysis = [patient("p1", birth=OLDER_WOMAN), condition("Z99.2"), condition("N18.6")]
    renal = the_card(order_cards(on_dialysis, draft(TERIPARATIDE, rid="teri"), locale=locale),
                     "teriparatide-calcification")
    assert ("insuffisance rénale sévère" if locale == "fr" else "severe renal impairment") in renal.summary
    assert actions(renal) == [("delete", "MedicationRequest/teri")]


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_without_risk_factors_is_silent(locale: str) -> None:
    assert order_cards(older_woman(*normal_chemistry()), draft(TERIPARATIDE, rid="teri"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_teriparatide_for_a_woman_without_pregnancy_data_names_it(locale: str) -> None:
    (card,) = order_cards([patient("p1", birth=WOMAN_32), egfr(90)], draft(TERIPARATIDE, rid="teri"), locale=locale)
    assert not_recorded(card) == "pregnancy"
    assert ("tériparatide contre-indiqué" if locale == "fr" else "teriparatide is contraindicated") in text(card)
