"""Subtype suggestion, the two gates, red flags, risk profiles, missing work-up and silence."""

from __future__ import annotations

import pytest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.conftest import fixture_resources, run, with_calcinosis

THIGH, SCROTUM, KNEE = "371305003", "81992007", "63464009"


# --------------------------------------------------------------------------- subtype and gates


def test_clear_leader_is_suggested() -> None:
    _, assessment = run(*with_calcinosis(condition("M34.1"), *normal_chemistry()))
    assert assessment.subtype == "dystrophic"
    assert assessment.differential[0] == ("dystrophic", 6)


def test_below_min_score_is_indeterminate_with_the_top_two() -> None:
    # Lupus alone: dystrophic 2 (< 4): the card gives the top two instead of a subtype.
    _, assessment = run(*with_calcinosis(condition("M32.9")))
    assert assessment.subtype == "indeterminate"
    assert assessment.differential[0] == ("dystrophic", 2)
    assert len(assessment.differential) == 5


def test_metabolic_gate_caps_dystrophic() -> None:
    # Limited SSc (dystrophic +4) with hyperphosphataemia (P1 true): a mixed picture, not "dystrophic".
    _, assessment = run(*with_calcinosis(condition("M34.1"), lab("2777-1", 5.4, "mg/dL")))
    assert assessment.metabolic
    assert assessment.scores["dystrophic"] >= 2
    assert assessment.subtype != "dystrophic"


def test_idiopathic_needs_the_complete_work_up() -> None:
    # Scrotal lesion in a healthy man: idiopathic leads, but without PTH and ANA it cannot be suggested.
    resources = [patient("p1", gender="male", birth="1995-01-01"), condition("L94.2", sites=(SCROTUM,)),
                 lab("17861-6", 9.4, "mg/dL"), lab("2777-1", 3.5, "mg/dL")]
    _, partial = run(*resources)
    assert partial.differential[0][0] == "idiopathic"
    assert partial.subtype == "indeterminate"
    assert {"pth", "lupus-serology", "vitamin-d-25"} <= set(partial.missing_for_idiopathic)
    _, complete = run(*resources[:2], *normal_chemistry(), lab("8061-4", negative=True))
    assert complete.workup_complete
    assert complete.subtype == "idiopathic"


def test_calciphylaxis_stays_in_the_differential_with_a_renal_criterion() -> None:
    _, assessment = run(*with_calcinosis(condition("Z99.2"), condition("301364008", "snomed"),
                                         condition("46742003", "snomed", sites=(THIGH,))))
    assert assessment.calciphylaxis_kept
    assert assessment.differential[0][0] == "calciphylaxis"


# --------------------------------------------------------------------------- red flags


def _flags(*resources: dict[str, object]) -> dict[str, str]:
    _, assessment = run(*resources)  # type: ignore[arg-type]
    return {f.id: f.indicator for f in assessment.flags}


PAINFUL_ULCER = (condition("301364008", "snomed"), condition("46742003", "snomed", sites=(THIGH,)))


@pytest.mark.parametrize(
    ("resources", "flag", "indicator"),
    [
        pytest.param((patient("p1"), condition("Z99.2"), *PAINFUL_ULCER), "suspected-calciphylaxis", "critical",
                     id="suspected-calciphylaxis-before-calcinosis-is-coded"),
        pytest.param((patient("p1"), condition("237900002", "snomed")), "untreated-calciphylaxis", "critical",
                     id="untreated-calciphylaxis"),
        pytest.param((patient("p1"), lab("17861-6", 10.4, "mg/dL"), lab("1751-7", 4.2, "g/dL"),
                      lab("2777-1", 7.0, "mg/dL")), "high-calcium-phosphate-product", "critical",
                     id="ca-x-p-72"),
        pytest.param((patient("p1"), condition("N18.32"), lab("17861-6", 9.6, "mg/dL"), lab("1751-7", 4.1, "g/dL"),
                      lab("2777-1", 6.0, "mg/dL")), "elevated-calcium-phosphate-product", "warning",
                     id="ca-x-p-57-in-ckd3"),
        pytest.param((patient("p1"), lab("17861-6", 14.2, "mg/dL"), lab("1751-7", 4.1, "g/dL")),
                     "severe-hypercalcemia", "critical", id="calcium-14.2"),
        pytest.param((patient("p1"), lab("2000-8", 3.1, "mmol/L"), lab("1751-7", 41, "g/L")),
                     "moderate-hypercalcemia", "warning", id="calcium-3.1-mmol"),
        pytest.param((patient("p1"), condition("N18.4"), lab("2777-1", 7.4, "mg/dL")),
                     "severe-hyperphosphatemia", "warning", id="phosphate-7.4-ckd4"),
        pytest.param((patient("p1", birth="2026-11-10"), medication("J01DD04", text="Ceftriaxone"),
                      medication("A12AA03", text="Calcium gluconate IV")),
                     "neonatal-ceftriaxone-calcium", "critical", id="neonate"),
        pytest.param((*with_calcinosis(), condition("46742003", "snomed")), "infected-ulcerated-calcinosis",
                     "warning", id="ulcerated-calcinosis"),
        pytest.param((*with_calcinosis(), condition(None, text="X-ray: calcinosis with lysis of the femoral head")),
                     "joint-destruction", "warning", id="joint-destruction"),
        pytest.param((patient("p1"), medication("B01AA03", text="Warfarin"), *PAINFUL_ULCER[:1],
                      condition("423902002", "snomed", sites=(THIGH,)), *normal_chemistry()),
                     "possible-non-uremic-calciphylaxis", "warning", id="non-uraemic-C9"),
    ],
)
def test_red_flag(resources: tuple[dict[str, object], ...], flag: str, indicator: str) -> None:
    flags = _flags(*resources)
    assert flags.get(flag) == indicator


def test_non_uraemic_pattern_is_not_critical() -> None:
    # Rule C9: the critical flag needs a renal criterion.
    flags = _flags(patient("p1"), medication("B01AA03", text="Warfarin"), *PAINFUL_ULCER,
                   condition("423902002", "snomed", sites=(THIGH,)), *normal_chemistry())
    assert "suspected-calciphylaxis" not in flags
    assert flags["possible-non-uremic-calciphylaxis"] == "warning"


def test_flag_evidence_names_values_dates_and_sources() -> None:
    _, assessment = run(patient("p1"), lab("17861-6", 10.4, "mg/dL", rid="ca1"), lab("1751-7", 4.2, "g/dL"),
                        lab("2777-1", 7.0, "mg/dL", rid="p1obs"))
    flag = next(f for f in assessment.flags if f.id == "high-calcium-phosphate-product")
    references = {e.reference for e in flag.evidence}
    assert {"Observation/ca1", "Observation/p1obs"} <= references
    assert any(e.concept == "ca_x_p" and e.value is not None and e.value >= 70 for e in flag.evidence)


# --------------------------------------------------------------------------- risk and silence


def test_risk_card_for_ckd_4_5d_with_raised_ca_x_p_and_no_calcinosis() -> None:
    pid, resources = fixture_resources("risk_dialysis_raised_ca_x_p.json")
    from hooks.engine.service import assess_resources
    from tests.fhir_builders import NOW

    _, assessment = assess_resources(resources, patient_id=pid, now=NOW)
    assert [r.id for r in assessment.risks] == ["metastatic-calcification-risk"]
    # One concise card: the CKD Ca x P warning is folded into the risk card.
    assert not assessment.flags


def test_calciphylaxis_risk_profile() -> None:
    _, assessment = run(patient("p1"), condition("Z99.2"), medication("B01AA03", text="Warfarin"),
                        medication("A12AA04", text="Calcium carbonate"))
    assert [r.id for r in assessment.risks] == ["calciphylaxis-risk-profile"]
    assert set(assessment.risks[0].risk_factors) >= {"warfarin", "calcium-based-binder"}


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param((patient("p1"),), id="no-data"),
        pytest.param((patient("p1"), *normal_chemistry(), condition("E11.9"), condition("N18.31")),
                     id="diabetes-ckd3-normal-labs"),
        pytest.param((patient("p1"), condition("M34.1"), lab("8061-4", negative=False)), id="ssc-without-calcinosis"),
        pytest.param((patient("p1"), condition("L94.2", verification="refuted")), id="refuted-calcinosis"),
        pytest.param((patient("p1"), condition(None, text="no calcinosis on examination")), id="negated-text"),
        pytest.param((patient("p1"), condition(None, text="pas de calcinose cutanée")), id="negated-text-fr"),
    ],
)
def test_silence(resources: tuple[dict[str, object], ...]) -> None:
    _, assessment = run(*resources)  # type: ignore[arg-type]
    assert assessment.silent


# --------------------------------------------------------------------------- missing work-up


def test_missing_work_up_orders_the_few_decisive_tests_first() -> None:
    _, assessment = run(*with_calcinosis(condition("M34.1"), lab("17861-6", 9.5, "mg/dL")))
    # At most 4 draft orders (ruleset max_workup_orders), the ones that change the classification first.
    assert assessment.missing_workup == ("phosphate", "renal-function", "albumin", "pth")
    assert assessment.workup.deferred == ("vitamin-d-25",)
    assert "calcium" not in assessment.missing_workup
    # SSc is already diagnosed: no serology for it, nor lupus markers (issue 10: proportionate work-up).
    asked = set(assessment.missing_workup) | set(assessment.workup.deferred)
    assert not asked & {"ssc-serology", "lupus-serology", "myositis-workup"}


def test_conditional_work_up_items() -> None:
    # Hypercalcaemia with low PTH: 1,25-(OH)2-D and ACE (sarcoidosis) become relevant; so do Mg and bicarbonate.
    labs = (lab("17861-6", 11.8, "mg/dL"), lab("1751-7", 4.0, "g/dL"), lab("2731-8", 9, "pg/mL"))
    _, assessment = run(*with_calcinosis(*labs))
    asked = set(assessment.missing_workup) | set(assessment.workup.deferred)
    assert {"vitamin-d-1-25", "ace", "magnesium", "bicarbonate"} <= asked
    # On dialysis the milk-alkali tests are not asked for (issue 10).
    _, dialysis = run(*with_calcinosis(*labs, condition("Z99.2")))
    asked = set(dialysis.missing_workup) | set(dialysis.workup.deferred)
    assert not asked & {"magnesium", "bicarbonate"}


@pytest.mark.parametrize(
    ("fixture", "subtype"),
    [
        ("seed000_heroin_injection_dystrophic.json", "dystrophic"),
        ("seed003_limited_ssc_dystrophic.json", "dystrophic"),
        ("seed004_sle_universalis_dystrophic.json", "dystrophic"),
        ("metastatic_ckd4_hyperparathyroidism.json", "metastatic"),
        ("calciphylaxis_dialysis_warfarin.json", "calciphylaxis"),
        ("iatrogenic_calcium_gluconate_extravasation.json", "iatrogenic"),
        ("idiopathic_scrotal_complete_workup.json", "idiopathic"),
    ],
)
def test_fixture_patients_get_their_expected_subtype(fixture: str, subtype: str) -> None:
    from hooks.engine.service import assess_resources
    from tests.fhir_builders import NOW

    pid, resources = fixture_resources(fixture)
    _, assessment = assess_resources(resources, patient_id=pid, now=NOW)
    assert assessment.subtype == subtype


def test_seed_003_healed_ulcer_scars_are_not_an_ulcer() -> None:
    from hooks.engine.service import assess_resources
    from tests.fhir_builders import NOW

    pid, resources = fixture_resources("seed003_limited_ssc_dystrophic.json")
    facts, assessment = assess_resources(resources, patient_id=pid, now=NOW)
    assert not facts.skin.ulcer
    assert "R31" not in assessment.rules_fired
    assert facts.skin.pain  # "nodules ... douloureux"
    _ = KNEE
