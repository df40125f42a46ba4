"""Issue 10: each unsafe answer a clinical review found, as a FHIR bundle with the safe cards, in both languages.

The bundles are in ``tests/fixtures/calcinosis/safety_*.json``; ``tests/fixtures/calcinosis/README.md`` lists
each patient with the safety rule it checks. Variations of a bundle (a younger child, a stopped drug) are
built here from the same FHIR resources.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from fhir_mappings.facts import PatientFacts
from hooks.engine.assessment import Assessment
from hooks.engine.cards import EXTENSION_KEY, render_cards
from hooks.engine.service import assess_resources
from hooks.models import Card
from tests.fhir_builders import NOW, condition, lab, medication, normal_chemistry, patient, when
from tests.hooks.engine.conftest import fixture_resources

LOCALES = ["en", "fr"]


def assess(resources: list[dict[str, Any]], pid: str) -> tuple[PatientFacts, Assessment]:
    return assess_resources(resources, patient_id=pid, now=NOW)


def bundle(name: str) -> tuple[str, list[dict[str, Any]]]:
    pid, resources = fixture_resources(f"safety_{name}.json")
    return pid, copy.deepcopy(resources)


def assessed(name: str) -> tuple[PatientFacts, Assessment]:
    return assess(*reversed(bundle(name)))


def cards_of(facts: PatientFacts, assessment: Assessment, locale: str) -> list[Card]:
    return render_cards(assessment, facts, locale=locale, seed="safety")


def cards(name: str, locale: str) -> list[Card]:
    return cards_of(*assessed(name), locale)


def kind(card: Card) -> str:
    return str(card.extension[EXTENSION_KEY]["kind"])


def the(found: list[Card], wanted: str) -> Card:
    (card,) = [c for c in found if kind(c) == wanted]
    return card


def text(card: Card) -> str:
    return f"{card.summary}\n{card.detail or ''}"


def everything(found: list[Card]) -> str:
    return "\n".join(text(c) for c in found)


def options(assessment: Assessment) -> tuple[str, ...]:
    assert assessment.therapy is not None
    return assessment.therapy.options


def cautions(assessment: Assessment) -> set[tuple[str, str]]:
    assert assessment.therapy is not None
    return {(c.option, c.reason) for c in assessment.therapy.cautions}


def set_birth_date(resources: list[dict[str, Any]], birth_date: str) -> list[dict[str, Any]]:
    for resource in resources:
        if resource["resourceType"] == "Patient":
            resource["birthDate"] = birth_date
    return resources


# ---------------------------------------------------------------------------------------------- pregnancy


@pytest.mark.parametrize(("locale", "words"), [("en", ["pregnancy"]), ("fr", ["grossesse"])])
def test_pregnant_woman_is_not_offered_warfarin_or_minocycline_and_the_card_says_why(
        locale: str, words: list[str]) -> None:
    facts, assessment = assessed("pregnant_ssc_painful_nodules")
    assert facts.pregnancy.status == "yes"
    assert {"warfarin", "minocycline"}.isdisjoint(options(assessment))
    assert {("warfarin", "pregnancy"), ("minocycline", "pregnancy")} <= cautions(assessment)
    therapy = the(cards_of(facts, assessment, locale), "therapy-options")
    assert therapy.indicator == "warning"  # addendum S27: pregnancy lines are warnings (C4)
    not_offered = next(line for line in (therapy.detail or "").splitlines() if line.startswith("**No"))
    assert all(word in not_offered for word in words)
    assert ("warfarine" if locale == "fr" else "warfarin") in not_offered


@pytest.mark.parametrize(("locale", "line"), [
    ("en", "**Pregnancy status not recorded:** check before low-dose warfarin, minocycline"),
    ("fr", "**Grossesse non renseignée\u00a0:** à vérifier avant warfarine faible dose, minocycline"),
])
def test_woman_of_child_bearing_age_without_pregnancy_data_is_told_it_is_not_recorded(locale: str, line: str) -> None:
    facts, assessment = assessed("woman_no_pregnancy_data")
    assert facts.pregnancy.status == "unknown"
    # Never assume "not pregnant": the options stay, each with the unknown named.
    assert {("warfarin", "pregnancy-not-recorded"), ("minocycline", "pregnancy-not-recorded")} <= cautions(assessment)
    therapy = the(cards_of(facts, assessment, locale), "therapy-options")
    assert line in (therapy.detail or "").splitlines()
    assert therapy.indicator == "warning"


@pytest.mark.parametrize(("birth_date", "gender"), [("1950-01-01", "female"), ("1991-09-02", "male")])
def test_no_pregnancy_line_outside_the_12_to_55_band_or_for_men(birth_date: str, gender: str) -> None:
    pid, resources = bundle("woman_no_pregnancy_data")
    for resource in set_birth_date(resources, birth_date):
        if resource["resourceType"] == "Patient":
            resource["gender"] = gender
    facts, assessment = assess(resources, pid)
    assert facts.pregnancy.status == "not-applicable"
    assert not {reason for _, reason in cautions(assessment)} & {"pregnancy", "pregnancy-not-recorded"}
    assert "regnan" not in everything(cards_of(facts, assessment, "en"))


def test_a_pregnancy_status_observation_is_read_like_a_condition() -> None:
    pid, resources = bundle("woman_no_pregnancy_data")
    resources.append({
        "resourceType": "Observation", "id": "preg-status", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when(20),
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA15173-0"}]}})
    facts, assessment = assess(resources, pid)
    assert facts.pregnancy.status == "yes"
    assert ("warfarin", "pregnancy") in cautions(assessment)
    assert "warfarin" not in options(assessment)


# ------------------------------------------------------------------------------------- mechanical valve


@pytest.mark.parametrize(("locale", "keep", "never"), [
    ("en", "no DOAC", "stop warfarin"),
    ("fr", "pas d'AOD", "arrêt warfarine"),
])
def test_mechanical_valve_never_gets_stop_warfarin_switch_anticoagulant(locale: str, keep: str, never: str) -> None:
    facts, assessment = assessed("mechanical_valve_calciphylaxis_warfarin")
    assert facts.mechanical_valve.status == "yes"  # read from French free text
    assert ("stop-warfarin", "mechanical-valve") in cautions(assessment)
    found = cards_of(facts, assessment, locale)
    flag = the(found, "red-flag")
    assert flag.indicator == "critical"
    assert keep in (flag.detail or "")
    assert never not in (flag.detail or "")
    assert ("Valve" in (flag.detail or "")) or ("valve" in (flag.detail or ""))  # the fact that changed it
    therapy = text(the(found, "therapy-options"))
    assert keep in therapy
    assert "apixaban" not in everything(found).lower()


# ----------------------------------------------------------------------------------------- interactions


@pytest.mark.parametrize(("locale", "summary"), [
    ("en", "Dystrophic calcinosis: review current colchicine now"),
    ("fr", "Calcinose dystrophique\u00a0: revoir sans délai le traitement en cours (colchicine)"),
])
def test_colchicine_next_to_a_fresh_clarithromycin_is_flagged_not_kept_as_an_option(locale: str, summary: str) -> None:
    facts, assessment = assessed("colchicine_clarithromycin")
    assert "colchicine" not in options(assessment)
    assert ("colchicine", "strong-cyp3a4-pgp-inhibitor") in cautions(assessment)
    assert assessment.therapy is not None
    assert [u.option for u in assessment.therapy.current] == ["colchicine"]
    therapy = the(cards_of(facts, assessment, locale), "therapy-options")
    assert therapy.summary == summary
    assert therapy.indicator == "warning"
    current = next(line for line in (therapy.detail or "").splitlines() if "olchicine" in line)
    assert "clarithromycin" in current  # the drug to act on is named ("clarithromycine" in French)


@pytest.mark.parametrize(("locale", "note"), [("en", "with tacrolimus: transplant team, check trough levels"),
                                              ("fr", "avec tacrolimus\u00a0: équipe de greffe, taux résiduels")])
def test_diltiazem_for_a_transplant_recipient_on_tacrolimus_carries_the_caution(locale: str, note: str) -> None:
    facts, assessment = assessed("transplant_tacrolimus_diltiazem")
    assert ("calcium-channel-blocker", "calcineurin-inhibitor-interaction") in cautions(assessment)
    therapy = the(cards_of(facts, assessment, locale), "therapy-options")
    diltiazem = next(line for line in (therapy.detail or "").splitlines() if "Diltiazem" in line)
    assert diltiazem.endswith(note)
    assert therapy.indicator == "warning"


# ------------------------------------------------------------------ calcium and vitamin D as treatment


@pytest.mark.parametrize(("locale", "first"), [("en", "1. Re-titrate calcium and vitamin D"),
                                               ("fr", "1. Réajuster calcium et vitamine D")])
def test_hypoparathyroidism_replacement_is_retitrated_never_stopped(locale: str, first: str) -> None:
    facts, assessment = assessed("hypoparathyroidism_replacement")
    assert options(assessment)[0] == "replacement-retitration"
    assert "stop-calcium-vitamin-d" not in options(assessment)
    assert ("stop-calcium-vitamin-d", "hypoparathyroidism-replacement") in cautions(assessment)
    found = cards_of(facts, assessment, locale)
    assert the(found, "therapy-options").detail.splitlines()[0].startswith(first)  # type: ignore[union-attr]
    # Replacement calcitriol is not "vitamin D excess".
    assert not [h.rule.id for h in assessment.hits if "vitamin" in h.rule.finding.en.lower()]
    assert "excess" not in everything(found)
    assert "excès" not in everything(found)


def test_hypocalcaemic_ckd_patient_is_not_told_to_stop_calcium_first() -> None:
    facts, assessment = assessed("hypocalcaemic_ckd")
    assert "stop-calcium-vitamin-d" not in options(assessment)
    assert ("stop-calcium-vitamin-d", "hypocalcemia") in cautions(assessment)
    assert options(assessment)[0] == "non-calcium-phosphate-binder"
    for locale in LOCALES:
        detail = the(cards_of(facts, assessment, locale), "therapy-options").detail or ""
        assert not detail.splitlines()[0].lower().startswith(("1. stop", "1. arrêter"))


# ---------------------------------------------------------------------------------------------- neonate


@pytest.mark.parametrize(("locale", "do"), [("en", "**Do:** Replace ceftriaxone"),
                                            ("fr", "**Conduite\u00a0:** Remplacer la ceftriaxone")])
def test_neonate_on_ceftriaxone_and_calcium_nutrition_replaces_ceftriaxone_not_the_calcium(
        locale: str, do: str) -> None:
    facts, assessment = assessed("neonate_ceftriaxone_calcium")
    found = cards_of(facts, assessment, locale)
    flag = the(found, "red-flag")
    assert flag.indicator == "critical"
    assert (flag.detail or "").startswith(do)
    assert options(assessment)[0] == "replace-ceftriaxone"
    assert "stop-offending-infusion" not in options(assessment)[:1]
    # Minimal neonatal work-up: calcium and phosphate only.
    assert set(assessment.missing_workup) <= {"calcium", "phosphate"}
    assert len(the(found, "missing-workup").suggestions or []) <= 2


def test_iatrogenic_neonate_on_ceftriaxone_keeps_the_needed_calcium() -> None:
    pid, resources = bundle("neonate_ceftriaxone_calcium")
    resources.append(condition("T80.818A", pid=pid, onset_days_ago=4, text="Extravasation of calcium gluconate"))
    facts, assessment = assess(resources, pid)
    assert assessment.subtype == "iatrogenic"
    assert ("stop-offending-infusion", "neonate-ceftriaxone-calcium") in cautions(assessment)
    assert options(assessment)[0] == "replace-ceftriaxone"
    for locale, note in (("en", "replace ceftriaxone, keep needed calcium"),
                         ("fr", "remplacer la ceftriaxone, garder le calcium nécessaire")):
        assert note in text(the(cards_of(facts, assessment, locale), "therapy-options"))


# --------------------------------------------------------------------------------------------- children


@pytest.mark.parametrize("age", [6, 9])
@pytest.mark.parametrize(("locale", "summary"), [("en", "no treatment needed now"),
                                                 ("fr", "pas de traitement nécessaire")])
def test_children_with_small_painless_nodules_are_observed(age: int, locale: str, summary: str) -> None:
    facts, assessment = assessed(f"child_{age}_painless_nodules")
    # Observe first; treating the dermatomyositis itself stays an option; no calcinosis drug is offered.
    assert options(assessment) == ("observation", "treat-underlying-disease")
    therapy = the(cards_of(facts, assessment, locale), "therapy-options")
    assert summary in therapy.summary
    for drug in ("arfarin", "eftriaxon", "inocyclin"):
        assert drug not in text(therapy)


def test_painful_nodules_in_a_child_of_9_allow_minocycline_and_warn_on_warfarin() -> None:
    _, assessment = assessed("child_9_painful_nodules")
    assert "minocycline" in options(assessment)
    assert ("warfarin", "paediatric-warfarin") in cautions(assessment)


@pytest.mark.parametrize(("locale", "note"), [("en", "3. Colchicine — kidney function not known: check first"),
                                              ("fr", "3. Colchicine — fonction rénale inconnue\u00a0: à vérifier")])
def test_a_child_without_a_usable_kidney_estimate_is_told_kidney_function_is_not_known(locale: str, note: str) -> None:
    # CKD-EPI is adult-only and the brief gives no Schwartz equation: a child's renal limits cannot be checked.
    facts, assessment = assessed("child_9_painful_nodules")
    assert ("colchicine", "renal-function-not-known") in cautions(assessment)
    assert ("ivig", "renal-function-not-known") in cautions(assessment)
    assert note in (the(cards_of(facts, assessment, locale), "therapy-options").detail or "").splitlines()
    _, adult = assessed("woman_no_pregnancy_data")  # an adult with a creatinine: eGFR computed
    assert not {option for option, reason in cautions(adult) if reason == "renal-function-not-known"}


def test_painful_nodules_in_a_child_of_6_exclude_minocycline() -> None:
    pid, resources = bundle("child_9_painful_nodules")
    facts, assessment = assess(set_birth_date(resources, "2020-05-01"), pid)
    assert facts.age_years is not None
    assert facts.age_years < 8
    assert "minocycline" not in options(assessment)
    assert ("minocycline", "child-under-8") in cautions(assessment)


# --------------------------------------------------------------------------------------------- calciphylaxis


@pytest.mark.parametrize("name", ["calciphylaxis_not_on_dialysis", "mechanical_valve_calciphylaxis_warfarin"])
def test_calciphylaxis_never_gets_dystrophic_lesion_surgery(name: str) -> None:
    facts, assessment = assessed(name)
    assert assessment.subtype == "calciphylaxis"
    assert "surgical-excision" not in options(assessment)
    for locale, word in (("en", "excision"), ("fr", "exérèse")):
        assert word not in everything(cards_of(facts, assessment, locale)).lower()


@pytest.mark.parametrize(("locale", "note"), [("en", "no validated dose without dialysis"),
                                              ("fr", "pas de dose validée hors dialyse")])
def test_thiosulfate_without_dialysis_is_not_the_haemodialysis_regimen(locale: str, note: str) -> None:
    facts, assessment = assessed("calciphylaxis_not_on_dialysis")
    assert facts.ckd is not None
    assert not facts.ckd.dialysis
    detail = the(cards_of(facts, assessment, locale), "therapy-options").detail or ""
    line = next(li for li in detail.splitlines() if "hiosulfat" in li)
    assert note in line
    assert "25 g" not in detail
    assert "after each" not in detail
    assert "après chaque" not in detail


# ------------------------------------------------------------------------------------ treat the cause


def test_primary_hyperparathyroidism_is_parathyroidectomy_before_cinacalcet() -> None:
    _, assessment = assessed("primary_hyperparathyroidism")
    assert options(assessment)[0] == "treat-cause-primary-hpt"
    assert ("cinacalcet", "surgery-first-line") in cautions(assessment)
    pid, resources = bundle("primary_hyperparathyroidism")
    resources.append(condition(None, pid=pid, onset_days_ago=30, text="Patient declined surgery"))
    _, inoperable = assess(resources, pid)
    assert "cinacalcet" in options(inoperable)
    assert ("cinacalcet", "surgery-first-line") not in cautions(inoperable)


@pytest.mark.parametrize(("name", "first", "words"), [
    ("sarcoidosis_hypercalcaemia", "treat-cause-sarcoidosis", {"en": "lucocorticoid", "fr": "corticothérapie"}),
    ("myeloma_hypercalcaemia", "treat-cause-malignancy", {"en": "malignancy", "fr": "tumorale"}),
])
def test_metastatic_calcinosis_of_a_known_cause_says_treat_the_cause(
        name: str, first: str, words: dict[str, str]) -> None:
    facts, assessment = assessed(name)
    assert assessment.subtype == "metastatic"
    assert options(assessment)[0] == first
    for locale in LOCALES:
        therapy = the(cards_of(facts, assessment, locale), "therapy-options")
        assert words[locale] in therapy.summary


def myeloma_bundle_with_cancer_named(text: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The hypercalcaemic metastatic-calcinosis patient of the myeloma bundle, the myeloma code replaced by a text."""
    pid, resources = bundle("myeloma_hypercalcaemia")
    resources = [r for r in resources if not (r["resourceType"] == "Condition"
                                              and r["code"].get("coding", [{}])[0].get("code") == "C90.00")]
    if text is not None:
        resources.append(condition(None, pid=pid, onset_days_ago=60, text=text))
    return pid, resources


@pytest.mark.parametrize(("text", "named"), [
    ("Adénocarcinome pulmonaire avec métastases osseuses", "adénocarcinome"),
    ("Breast cancer, bone metastases", "breast cancer"),
    ("Lymphome non hodgkinien", "lymphome"),
    ("Non-Hodgkin lymphoma", "lymphoma"),
])
def test_another_cancer_named_in_the_record_is_the_cause_to_treat_first_and_is_named(text: str, named: str) -> None:
    """Safety addendum S32: hypercalcaemia with G-MALIG "or another active cancer" (no verified code set: text)."""
    pid, resources = myeloma_bundle_with_cancer_named(None)
    _, unexplained = assess(resources, pid)
    assert "treat-cause-malignancy" not in options(unexplained)
    assert "vitamin-d-1-25" in unexplained.missing_workup
    pid, resources = myeloma_bundle_with_cancer_named(text)
    facts, assessment = assess(resources, pid)
    assert options(assessment)[0] == "treat-cause-malignancy"
    # The cause is explained: no granulomatous-disease work-up for it.
    assert "vitamin-d-1-25" not in assessment.missing_workup
    for locale in LOCALES:
        therapy = the(cards_of(facts, assessment, locale), "therapy-options")
        first = next(line for line in (therapy.detail or "").splitlines() if line.startswith("1. "))
        assert named.split()[-1] in first.lower()


@pytest.mark.parametrize("text", [
    "Pas de cancer", "No evidence of malignancy", "Antécédent familial de cancer du sein", "Mother had lymphoma",
    "Cancer screening", "Dépistage du cancer colorectal", "Cancer à éliminer", "Tumoral calcinosis",
    "Calcinose métastatique", "Lymphoedema of the left arm",
])
def test_a_cancer_that_is_negated_hypothetical_familial_or_only_a_word_alike_is_no_cause(text: str) -> None:
    pid, resources = myeloma_bundle_with_cancer_named(text)
    _, assessment = assess(resources, pid)
    assert "treat-cause-malignancy" not in options(assessment)
    assert "vitamin-d-1-25" in assessment.missing_workup


def test_a_coded_cause_is_named_once_on_the_first_option() -> None:
    facts, assessment = assessed("myeloma_hypercalcaemia")
    words = {"en": "multiple myeloma", "fr": "myélome multiple"}
    for locale in LOCALES:
        detail = the(cards_of(facts, assessment, locale), "therapy-options").detail or ""
        assert detail.splitlines()[0].lower().count(words[locale]) == 1
    facts, assessment = assessed("sarcoidosis_hypercalcaemia")
    first = (the(cards_of(facts, assessment, "en"), "therapy-options").detail or "").splitlines()[0]
    assert first.lower().startswith("1. glucocorticoids for sarcoidosis —")


def test_vitamin_d_in_sarcoidosis_with_high_calcium_is_to_stop() -> None:
    _, assessment = assessed("sarcoidosis_hypercalcaemia")
    assert ("treat-cause-sarcoidosis", "active-vitamin-d-sarcoidosis") in cautions(assessment)


# --------------------------------------------------------------------------------- current and tried drugs


def test_a_drug_already_taken_is_current_and_one_that_failed_is_tried_never_new() -> None:
    pid, resources = bundle("transplant_tacrolimus_diltiazem")
    resources = [r for r in resources if r["resourceType"] != "MedicationRequest"]
    resources += [medication("M04AC01", text="Colchicine", days_ago=200, pid=pid),
                  medication("C08DB01", text="Diltiazem", status="stopped", days_ago=150, pid=pid)]
    facts, assessment = assess(resources, pid)
    assert assessment.therapy is not None
    assert {"colchicine", "calcium-channel-blocker"}.isdisjoint(options(assessment))
    assert [u.option for u in assessment.therapy.current] == ["colchicine"]
    assert [u.option for u in assessment.therapy.tried] == ["calcium-channel-blocker"]
    for locale, current, tried in (("en", "**Current:** Colchicine since", "**Tried:** Diltiazem (stopped"),
                                   ("fr", "**En cours\u00a0:** Colchicine depuis le",
                                    "**Déjà essayé\u00a0:** Diltiazem (arrêté le")):
        detail = the(cards_of(facts, assessment, locale), "therapy-options").detail or ""
        assert current in detail
        assert tried in detail


# ----------------------------------------------------------------------------------- precedence and history


@pytest.mark.parametrize(("locale", "check"), [
    ("en", "**Check:** End-stage renal disease coded 1 Jul 2019, but eGFR 95 on"),
    ("fr", "**À vérifier\u00a0:** Insuffisance rénale terminale codée le 01/07/2019, mais DFG 95 le"),
])
def test_a_current_egfr_of_95_beats_a_legacy_esrd_code_and_the_card_shows_the_discrepancy(
        locale: str, check: str) -> None:
    facts, assessment = assessed("legacy_esrd_code_egfr_95")
    assert facts.ckd is not None
    assert (facts.ckd.stage, facts.ckd.dialysis) == ("G1", False)
    assert not [f for f in assessment.flags if f.indicator == "critical"]
    assert "suspected-calciphylaxis" not in {f.id for f in assessment.flags}
    assert check in (the(cards_of(facts, assessment, locale), "subtype-assessment").detail or "")


@pytest.mark.parametrize(("locale", "history", "workup"), [
    ("en", "Calcium 14.6 mg/dL (3.64 mmol/L), 13 Aug 2026 (not current)",
     "Last: 14.6 mg/dL (3.64 mmol/L) on 13 Aug 2026"),
    ("fr", "3,64 mmol/L (14,6 mg/dL), 13/08/2026 (valeur ancienne)",
     "Dernière valeur\u00a0: 3,64 mmol/L (14,6 mg/dL) le 13/08/2026"),
])
def test_a_critical_calcium_from_100_days_ago_is_shown_as_history_not_as_missing(
        locale: str, history: str, workup: str) -> None:
    facts, assessment = assessed("old_critical_calcium")
    assert not assessment.flags  # not current: no red flag
    found = cards_of(facts, assessment, locale)
    assert history in (the(found, "subtype-assessment").detail or "")
    assert workup in (the(found, "missing-workup").detail or "")


@pytest.mark.parametrize(("phosphate_range", "judged"), [(None, False), ((2.9, 5.4), True)])
def test_adolescent_phosphate_is_judged_on_the_lab_range_never_the_adult_one(
        phosphate_range: tuple[float, float] | None, judged: bool) -> None:
    teenager = patient("p1")
    teenager["birthDate"] = "2011-06-01"
    phosphate = lab("2777-1", 6.1, "mg/dL", ref=phosphate_range) if phosphate_range else lab("2777-1", 6.1, "mg/dL")
    facts, assessment = assess([teenager, condition("L94.2", sites=("74757004",)), condition("M33.00"),
                                lab("17861-6", 9.6, "mg/dL"), phosphate, lab("2731-8", 40, "pg/mL")], "p1")
    assert facts.latest("phosphate").is_high is (True if judged else None)  # type: ignore[union-attr]
    assert ("phosphate-range-for-age" in assessment.unknowns) is not judged
    if not judged:
        detail = the(cards_of(facts, assessment, "en"), "subtype-assessment").detail or ""
        assert "Phosphate not judged" in detail


def test_vitamin_d_deficiency_with_secondary_hyperparathyroidism_does_not_block_dystrophic() -> None:
    resources = [patient("p1"), condition("M34.1"), condition("L94.2", sites=("56213003",)),
                 lab("17861-6", 9.0, "mg/dL"), lab("2777-1", 3.2, "mg/dL"), lab("1751-7", 4.0, "g/dL"),
                 lab("2731-8", 120, "pg/mL"), lab("62292-8", 9, "ng/mL"), lab("2160-0", 0.8, "mg/dL")]
    _, assessment = assess(resources, "p1")
    assert assessment.subtype == "dystrophic"
    assert not assessment.metabolic


# ------------------------------------------------------------------------------------ proportionate work-up


def test_no_serology_for_a_connective_tissue_disease_already_diagnosed() -> None:
    resources = [patient("p1"), condition("M32.9"), condition("L94.2", sites=("22180002",)),
                 *normal_chemistry("p1")]
    _, assessment = assess(resources, "p1")
    assert "lupus-serology" not in assessment.missing_workup


def test_no_antibody_tests_for_injection_site_nodules() -> None:
    resources = [patient("p1"), condition("L94.2", sites=("22180002",), text="Calcified nodules at injection sites"),
                 *normal_chemistry("p1")]
    _, assessment = assess(resources, "p1")
    assert "ssc-serology" not in assessment.missing_workup


def test_no_milk_alkali_tests_on_dialysis_and_no_creatinine_either() -> None:
    _, assessment = assessed("dialysis_hypercalcaemia_workup")
    assert {"magnesium", "bicarbonate", "renal-function"}.isdisjoint(assessment.missing_workup)


def test_milk_alkali_tests_off_dialysis_only_while_no_cause_is_known() -> None:
    _, phpt = assessed("primary_hyperparathyroidism")
    assert {"magnesium", "bicarbonate"}.isdisjoint(phpt.missing_workup)
    pid, resources = bundle("primary_hyperparathyroidism")
    _, on_carbonate = assess([*resources, medication("A12AA04", text="Calcium carbonate", days_ago=30, pid=pid)], pid)
    assert {"magnesium", "bicarbonate"} & set(on_carbonate.missing_workup)


@pytest.mark.parametrize("name", ["old_critical_calcium", "neonate_ceftriaxone_calcium", "myeloma_hypercalcaemia",
                                  "sarcoidosis_hypercalcaemia", "dialysis_hypercalcaemia_workup"])
def test_draft_orders_are_capped_ranked_and_each_says_why(name: str) -> None:
    facts, assessment = assessed(name)
    found = cards_of(facts, assessment, "en")
    workup = [c for c in found if kind(c) == "missing-workup"]
    if not workup:
        return
    suggestions = workup[0].suggestions or []
    assert 1 <= len(suggestions) <= 4
    reasons = [line for line in (workup[0].detail or "").splitlines() if line.startswith("- **")]
    assert len(reasons) == len(suggestions)


def test_known_myeloma_is_not_sent_for_a_sarcoidosis_work_up() -> None:
    _, assessment = assessed("myeloma_hypercalcaemia")
    assert {"ace", "vitamin-d-1-25"}.isdisjoint(assessment.missing_workup)


# ------------------------------------------------------------- clinical review of issue 10 (helper report)


def ssc_with_painful_nodules(birth: str, gender: str = "female", *extra: dict[str, Any]) -> list[dict[str, Any]]:
    woman = patient("p1")
    woman["birthDate"], woman["gender"] = birth, gender
    return [woman, condition("M34.1"), condition("L94.2", sites=("56213003",), text="Painful calcified nodules"),
            *normal_chemistry("p1"), *extra]


@pytest.mark.parametrize(("birth", "gender"), [("1969-03-01", "female"), ("2015-01-01", "female"),
                                               ("1995-01-01", "male")], ids=["57-after-ivf", "11-years", "male-coded"])
def test_a_recorded_pregnancy_counts_whatever_the_age_band_or_the_recorded_sex(birth: str, gender: str) -> None:
    facts, assessment = assess(ssc_with_painful_nodules(birth, gender, condition("Z33.1", onset_days_ago=60)), "p1")
    assert facts.pregnancy.status == "yes"
    assert "warfarin" not in options(assessment)
    assert ("warfarin", "pregnancy") in cautions(assessment)


def test_a_future_due_date_recorded_months_ago_and_a_gestational_age_mean_pregnant() -> None:
    due = {"resourceType": "Observation", "id": "edd", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "11778-8"}]},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when(90), "valueDateTime": when(-120)}
    weeks = {"resourceType": "Observation", "id": "ga", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "49051-6"}]},
             "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when(10),
             "valueQuantity": {"value": 24, "unit": "wk", "system": "http://unitsofmeasure.org", "code": "wk"}}
    for observation in (due, weeks):
        facts, _ = assess(ssc_with_painful_nodules("1990-01-01", "female", observation), "p1")
        assert facts.pregnancy.status == "yes", observation["id"]


@pytest.mark.parametrize("text", ["Prothèse mitrale mécanique", "Valve aortique mécanique On-X", "Mechanical AVR 2015",
                                  "PVM depuis 2012", "RVA mécanique"])
def test_mechanical_valve_phrasings_are_read(text: str) -> None:
    facts, _ = assess([patient("p1"), condition(None, text=text, onset_days_ago=900)], "p1")
    assert facts.mechanical_valve.status == "yes"


@pytest.mark.parametrize("status", ["inactive", "resolved"])
def test_an_implanted_valve_marked_inactive_still_counts(status: str) -> None:
    valve = condition("Z95.2", onset_days_ago=2000)
    valve["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": status}]}
    facts, _ = assess([patient("p1"), valve], "p1")
    assert facts.mechanical_valve.status == "yes"


@pytest.mark.parametrize(("locale", "keep", "never"), [
    ("en", "do not stop calcium or active vitamin D", "stop calcium"),
    ("fr", "ne pas arrêter calcium ni vitamine D active", "arrêt calcium"),
])
def test_calciphylaxis_in_hypoparathyroidism_never_says_stop_calcium(locale: str, keep: str, never: str) -> None:
    pid, resources = bundle("hypoparathyroidism_replacement")
    resources = [r for r in resources if "2160-0" not in str(r.get("code"))]  # a dialysis creatinine instead
    resources += [lab("2160-0", 7.2, "mg/dL", pid=pid, days_ago=4),
                  condition("N18.6", pid=pid, onset_days_ago=900), condition("Z99.2", pid=pid, onset_days_ago=900),
                  condition("46742003", "snomed", pid=pid, sites=("371305003",), onset_days_ago=8,
                            text="Painful necrotic ulcer of the thigh")]
    facts, assessment = assess(resources, pid)
    flag = the(cards_of(facts, assessment, locale), "red-flag")
    do_line = (flag.detail or "").splitlines()[0]
    assert keep in do_line
    assert never not in do_line.replace(keep, "")


def test_vitamin_d_excess_in_hypoparathyroidism_is_retitrated_not_stopped() -> None:
    pid, resources = bundle("hypoparathyroidism_replacement")
    resources.append(lab("62292-8", 160, "ng/mL", pid=pid, days_ago=4))
    _, assessment = assess(resources, pid)
    assert options(assessment)[0] == "replacement-retitration"
    assert ("treat-cause-vitamin-d-excess", "hypoparathyroidism-replacement") in cautions(assessment)


def test_no_surgical_evaluation_flag_on_a_calciphylaxis_ulcer() -> None:
    resources = [patient("p1"), condition("N18.4"), condition("L94.2", sites=("68367000",),
                 text="Painful ulcerated calcified nodule of the thigh with livedo"), *normal_chemistry("p1"),
                 lab("2160-0", 3.0, "mg/dL")]
    facts, assessment = assess(resources, "p1")
    assert assessment.subtype == "calciphylaxis"
    assert "infected-ulcerated-calcinosis" not in {f.id for f in assessment.flags}
    for locale, word in (("en", "surgical"), ("fr", "chirurgical")):
        assert word not in everything(cards_of(facts, assessment, locale))


def test_without_a_weight_the_card_says_the_crcl_limit_was_checked_on_the_egfr() -> None:
    elderly = ssc_with_painful_nodules("1945-01-01", "female", lab("2160-0", 1.3, "mg/dL", days_ago=3))
    _facts, assessment = assess(elderly, "p1")
    assert ("colchicine", "crcl-not-computed") in cautions(assessment)
    with_weight = [*elderly, lab("29463-7", 45, "kg", days_ago=3)]
    _, weighed = assess(with_weight, "p1")
    assert ("colchicine", "renal-impairment") in cautions(weighed)  # Cockcroft-Gault about 25 mL/min
    assert "colchicine" not in options(weighed)


@pytest.mark.parametrize(("drug", "reason"), [(("J01FA01", "Erythromycine"), "macrolide-france"),
                                              (("J01FA09", "Clarithromycine"), "macrolide-france")])
def test_colchicine_with_a_macrolide_is_contraindicated_as_in_france(drug: tuple[str, str], reason: str) -> None:
    resources = ssc_with_painful_nodules("1960-01-01", "female", medication(drug[0], text=drug[1], days_ago=2))
    _, assessment = assess(resources, "p1")
    assert "colchicine" not in options(assessment)
    assert ("colchicine", reason) in cautions(assessment)


def test_colchicine_is_not_offered_in_severe_hepatic_impairment() -> None:
    resources = ssc_with_painful_nodules("1960-01-01", "female",
                                         condition(None, text="Decompensated cirrhosis, Child-Pugh C"))
    _, assessment = assess(resources, "p1")
    assert ("colchicine", "severe-hepatic-impairment") in cautions(assessment)
    assert "colchicine" not in options(assessment)


@pytest.mark.parametrize(("extra", "note"), [
    ((condition("71192002", "snomed", onset_days_ago=900),), "peritoneal dialysis: dose varies, IV route"),
    ((), "child: weight-based dose, specialist only"),
], ids=["peritoneal-dialysis", "child-on-haemodialysis"])
def test_thiosulfate_is_not_the_adult_haemodialysis_regimen_for_pd_or_children(
        extra: tuple[dict[str, Any], ...], note: str) -> None:
    young = patient("p1")
    young["birthDate"] = "2014-01-01" if not extra else "1960-01-01"
    resources = [young, condition("N18.6", onset_days_ago=900), *extra,
                 condition("Z99.2", onset_days_ago=900) if not extra else condition("N18.5", onset_days_ago=900),
                 condition("237900002", "snomed", sites=("371305003",), onset_days_ago=9),
                 condition("46742003", "snomed", sites=("371305003",), onset_days_ago=9, text="Painful necrotic ulcer")]
    facts, assessment = assess(resources, "p1")
    assert facts.ckd is not None
    assert facts.ckd.dialysis
    detail = the(cards_of(facts, assessment, "en"), "therapy-options").detail or ""
    assert note in next(line for line in detail.splitlines() if "hiosulfate" in line)


def test_french_hypercalcemie_maligne_of_a_primary_hpt_is_not_a_malignancy() -> None:
    pid, resources = bundle("primary_hyperparathyroidism")
    resources.append(condition(None, pid=pid, text="Hypercalcémie maligne sur hyperparathyroïdie primaire"))
    _, assessment = assess(resources, pid)
    assert "treat-cause-malignancy" not in options(assessment)


def test_an_infant_past_28_days_on_ceftriaxone_is_told_gestational_age_is_not_recorded() -> None:
    infant = patient("p1")
    infant["birthDate"] = (NOW - timedelta(days=35)).date().isoformat()
    resources = [infant, condition("L94.2", sites=("84607009",), onset_days_ago=3),
                 medication("J01DD04", text="Ceftriaxone IV", days_ago=4),
                 medication("A12AA03", text="Calcium gluconate (parenteral nutrition)", days_ago=10)]
    facts, assessment = assess(resources, "p1")
    flag = next(f for f in assessment.flags if f.id == "infant-ceftriaxone-gestational-age")
    assert flag.indicator == "warning"
    assert "âge gestationnel à la naissance non renseigné" in everything(cards_of(facts, assessment, "fr"))


def test_teriparatide_with_primary_hyperparathyroidism_warns() -> None:
    pid, resources = bundle("primary_hyperparathyroidism")
    resources.append(medication("H05AA02", text="Teriparatide", days_ago=200, pid=pid))
    facts, assessment = assess(resources, pid)
    assert ("review-teriparatide", "teriparatide-hypercalcaemic-disorder") in cautions(assessment)
    assert the(cards_of(facts, assessment, "en"), "therapy-options").indicator == "warning"


@pytest.mark.parametrize(("locale", "note"), [("en", "breastfeeding: not checked by this service"),
                                              ("fr", "allaitement\u00a0: non vérifié par ce service")])
def test_a_breastfeeding_woman_is_told_which_drugs_were_not_checked(locale: str, note: str) -> None:
    resources = ssc_with_painful_nodules("1990-01-01", "female", condition(None, text="Allaitement maternel"))
    facts, assessment = assess(resources, "p1")
    assert facts.breastfeeding.status == "yes"
    assert ("calcium-channel-blocker", "breastfeeding-not-checked") in cautions(assessment)
    detail = the(cards_of(facts, assessment, locale), "therapy-options").detail or ""
    assert note in next(line for line in detail.splitlines() if "Diltiazem" in line)
