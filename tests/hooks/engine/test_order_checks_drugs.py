"""Order checks for denosumab (addendum S34), Colchimax in breastfeeding (S23), diltiazem and verapamil (brief S7,
S9; addendum S24, S25) and teriparatide (S33): positive and negative, from FHIR input to the card, in English and
French.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
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
    with_route,
)

# ----------------------------------------------------------------------------- S34: denosumab


DENOSUMAB = "M05BX04"


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
    assert order_cards(woman(), colchimax(), locale=locale) == []


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
    # Named in words: no first-degree code is in the knowledge, and the text must not read as av_block.
    first_degree = condition(None, text="Bloc auriculo-ventriculaire du premier degré")
    assert "diltiazem-conduction-disease" not in checks(order_cards(man(first_degree),
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


@pytest.mark.parametrize(("locale", "summary", "line"), [
    ("en", "Diltiazem with timolol ophthalmic", "- Timolol ophthalmic (since "),
    ("fr", "Diltiazem avec timolol collyre", "- Timolol collyre (depuis le "),
])
def test_the_timolol_eye_drops_are_named_with_their_route(locale: str, summary: str, line: str) -> None:
    # Addendum S25 "Data": ophthalmic timolol, show the route (the prescriber judges an eye drop differently).
    resources = man(medication("10600", "rxnorm", text="Timolol 0.5% eye drops", rid="timolol", days_ago=30))
    card = the_card(order_cards(resources, draft(DILTIAZEM, rid="dilt"), locale=locale), "diltiazem-beta-blocker")
    assert card.summary.startswith(summary)
    assert line in text(card)


def test_a_drafted_eye_drop_is_named_with_its_route_on_the_order_line() -> None:
    resources = man(medication(DILTIAZEM, rid="dilt-current", days_ago=60))
    order = with_route(draft("10600", "rxnorm", rid="timolol"), "voie ophtalmique")
    card = the_card(order_cards(resources, order, locale="fr"), "diltiazem-beta-blocker")
    assert "**Prescription\u00a0:** Timolol collyre (brouillon)" in text(card)


def test_oral_timolol_is_named_without_a_route() -> None:
    resources = man(medication("10600", "rxnorm", text="Timolol 10 mg tablet", rid="timolol", days_ago=30))
    card = the_card(order_cards(resources, draft(DILTIAZEM, rid="dilt")), "diltiazem-beta-blocker")
    assert card.summary.startswith("Diltiazem with timolol:")


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


@pytest.mark.parametrize(("locale", "summary"), [
    ("en", "Diltiazem with tacrolimus (kidney transplant): raises tacrolimus levels; transplant or nephrology team "
           "must agree"),
    ("fr", "Diltiazem avec tacrolimus (greffe rénale)\u00a0: hausse des taux de tacrolimus\u00a0; accord requis de "
           "l'équipe de greffe ou de néphrologie"),
])
@pytest.mark.parametrize("transplant", [condition("Z94.0"), condition("737295003", "snomed")], ids=["icd", "snomed"])
def test_a_kidney_transplant_leads_the_tacrolimus_caution(transplant: dict[str, Any], locale: str,
                                                          summary: str) -> None:
    # Addendum S24 "Data": kidney transplant status raises the priority; the reason (trough levels) is unchanged.
    resources = man(transplant, medication("L04AD02", rid="tac", days_ago=200))
    card = the_card(order_cards(resources, draft(DILTIAZEM, rid="dilt"), locale=locale),
                    "diltiazem-calcineurin-inhibitor")
    assert card.summary == summary
    assert ("taux résiduels" if locale == "fr" else "trough levels") in text(card)
    reverse = the_card(order_cards(man(transplant, medication(DILTIAZEM, rid="dilt-current", days_ago=60)),
                                   draft("L04AD02", rid="tac"), locale=locale), "diltiazem-calcineurin-inhibitor")
    assert ("(greffe rénale)" if locale == "fr" else "(kidney transplant)") in reverse.summary


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

