"""Therapy options by subtype and extent, and every caution of brief §6f (rule C8: contraindicated -> cautions)."""

from __future__ import annotations

from typing import Any

import pytest

from hooks.engine.assessment import Assessment
from hooks.engine.cards import render_cards
from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.conftest import run

FOREARM, KNEE, ELBOW, SHOULDER, THIGH = "5742000", "63464009", "74757004", "76552005", "371305003"
PAIN = condition("301364008", "snomed")


def dystrophic(*extra: dict[str, Any], sites: tuple[str, ...] = (FOREARM,), birth: str = "1970-01-01",
               painful: bool = True) -> Assessment:
    """Limited SSc with calcinosis and normal chemistry: subtype dystrophic."""
    resources = [patient("p1", birth=birth), condition("L94.2", sites=sites), condition("M34.1"),
                 *normal_chemistry(), *extra]
    if painful:
        resources.append(PAIN)
    _, assessment = run(*resources)
    assert assessment.subtype == "dystrophic"
    return assessment


def cautions(assessment: Assessment) -> set[tuple[str, str]]:
    assert assessment.therapy is not None
    return {(c.option, c.reason) for c in assessment.therapy.cautions}


def options(assessment: Assessment) -> tuple[str, ...]:
    assert assessment.therapy is not None
    return assessment.therapy.options


def test_localized_dystrophic_first_line_then_local_options() -> None:
    plan = dystrophic()
    assert plan.therapy is not None
    assert plan.therapy.extent == "localized"
    assert options(plan)[:3] == ("treat-underlying-disease", "calcium-channel-blocker", "colchicine")
    assert "surgical-excision" in options(plan)
    assert "bisphosphonate" not in options(plan)


def test_disseminated_dystrophic_gets_the_systemic_options() -> None:
    plan = dystrophic(sites=(KNEE, ELBOW, SHOULDER))
    assert plan.therapy is not None
    assert plan.therapy.extent == "disseminated"
    assert {"bisphosphonate", "aluminium-hydroxide", "probenecid"} <= set(options(plan))
    assert "minocycline" not in options(plan)


def test_surgery_needs_a_documented_indication() -> None:
    # S17 / seed 000: no pain, infection, ulcer or functional impairment -> no surgery.
    plan = dystrophic(painful=False)
    assert "surgical-excision" not in options(plan)
    assert ("surgical-excision", "no-surgical-indication") in cautions(plan)


@pytest.mark.parametrize(
    ("extra", "sites", "birth", "option", "reason"),
    [
        pytest.param((lab("98979-8", 28, "mL/min/{1.73_m2}"),), (KNEE, ELBOW, SHOULDER), "1970-01-01",
                     "bisphosphonate", "renal-impairment", id="S1-bisphosphonate-egfr-28"),
        pytest.param((lab("35591-7", 30, "mL/min"),), (KNEE, ELBOW, SHOULDER), "1970-01-01",
                     "bisphosphonate", "renal-impairment", id="S1-bisphosphonate-crcl-30"),
        pytest.param((lab("98979-8", 50, "mL/min/{1.73_m2}"),), (KNEE, ELBOW, SHOULDER), "1970-01-01",
                     "aluminium-hydroxide", "chronic-kidney-disease", id="S4-aluminium-ckd3"),
        pytest.param((lab("98979-8", 25, "mL/min/{1.73_m2}"),), (FOREARM,), "1970-01-01",
                     "colchicine", "renal-impairment", id="S8-colchicine-egfr-25"),
        pytest.param((lab("98979-8", 25, "mL/min/{1.73_m2}"),), (FOREARM,), "1970-01-01",
                     "warfarin", "calciphylaxis-risk", id="S3-warfarin-ckd4"),
        pytest.param((), (FOREARM,), "2021-01-01", "minocycline", "child-under-8", id="S10-minocycline-age-5"),
        pytest.param((lab("98979-8", 25, "mL/min/{1.73_m2}"),), (KNEE, ELBOW, SHOULDER), "1970-01-01",
                     "probenecid", "low-gfr-ineffective", id="S11-probenecid-egfr-25"),
        pytest.param((medication("L04AX03", text="Methotrexate"),), (KNEE, ELBOW, SHOULDER), "1970-01-01",
                     "probenecid", "methotrexate-interaction", id="S11-probenecid-methotrexate"),
    ],
)
def test_contraindication_moves_the_option_to_cautions(
    extra: tuple[dict[str, Any], ...], sites: tuple[str, ...], birth: str, option: str, reason: str
) -> None:
    plan = dystrophic(*extra, sites=sites, birth=birth)
    assert option not in options(plan)
    assert (option, reason) in cautions(plan)


def test_bisphosphonate_with_hypocalcaemia_is_not_offered() -> None:
    # S2. Metabolic gate off (low calcium is not P1), SSc keeps the subtype dystrophic.
    _, assessment = run(patient("p1"), condition("L94.2", sites=(KNEE, ELBOW, SHOULDER)), condition("M34.1"),
                        lab("17861-6", 7.9, "mg/dL"), lab("1751-7", 4.1, "g/dL"), PAIN)
    assert assessment.subtype == "dystrophic"
    assert ("bisphosphonate", "hypocalcemia") in cautions(assessment)
    assert "bisphosphonate" not in options(assessment)


def test_neonate_with_iv_calcium_is_not_offered_ceftriaxone() -> None:
    # S5. A 16-day-old with juvenile dermatomyositis (dystrophic +4) and normal chemistry for age (phosphate
    # 4.0-7.0 mg/dL under 12, brief §4e) given IV calcium: dystrophic 6 leads iatrogenic 4.
    _, assessment = run(patient("p1", birth="2026-11-05"), condition("L94.2", sites=(FOREARM,)),
                        condition("M33.00"), lab("17861-6", 9.6, "mg/dL"), lab("1751-7", 4.0, "g/dL"),
                        lab("2777-1", 5.5, "mg/dL"), lab("2731-8", 40, "pg/mL"),
                        medication("A12AA03", text="Calcium gluconate IV"), PAIN)
    assert assessment.subtype == "dystrophic"
    assert ("ceftriaxone", "neonate-iv-calcium") in cautions(assessment)
    assert "ceftriaxone" not in options(assessment)


def test_colchicine_with_diltiazem_is_kept_with_a_caution_and_the_card_warns() -> None:
    # S7 is an interaction, not a contraindication; it touches a current drug -> warning card.
    plan = dystrophic(medication("C08DB01", text="Diltiazem"))
    assert "colchicine" in options(plan)
    assert ("colchicine", "cyp3a4-interaction") in cautions(plan)
    assert plan.therapy is not None
    assert plan.therapy.touches_current_medication


def _therapy_detail(*extra: dict[str, Any], locale: str) -> str:
    resources = [patient("p1", birth="1970-01-01"), condition("L94.2", sites=(FOREARM,)), condition("M34.1"),
                 *normal_chemistry(), PAIN, *extra]
    facts, assessment = run(*resources)
    cards = render_cards(assessment, facts, locale=locale, seed="t")
    (therapy,) = [c for c in cards if c.extension and c.extension["calcinosis-cds"]["kind"] == "therapy-options"]
    return therapy.detail or ""


@pytest.mark.parametrize(("locale", "said"), [("en", "with timolol ophthalmic (beta-blocker)"),
                                              ("fr", "avec timolol collyre (bêtabloquant)")])
@pytest.mark.parametrize("timolol", [
    medication("10600", "rxnorm", text="Timolol 0.5% eye drops"),
    {**medication("10600", "rxnorm"), "dosageInstruction": [{"route": {"text": "Ophthalmic"}}]},
    medication("10600", "rxnorm", text="Timoptol 0,5 % collyre"),
    medication("10600", "rxnorm", text="Timolol 0,1 % collyre en solution, sachet de récipients unidoses"),
    {**medication("10600", "rxnorm"), "dosageInstruction": [{"route": {"text": "Both Eyes"}}]},
    {**medication("10600", "rxnorm", text="Timolol 0.5% eye drops"),
     "dosageInstruction": [{"route": {"text": "Topical"}}]},
], ids=["dose form in the text", "route recorded", "French dose form", "single-dose sachets", "both eyes",
        "route says nothing, text does"])
def test_diltiazem_offered_to_a_patient_on_timolol_eye_drops_names_the_route(
        timolol: dict[str, Any], locale: str, said: str) -> None:
    # Addendum S25: ophthalmic timolol counts as a beta-blocker, and the card shows the route.
    line = next(line for line in _therapy_detail(timolol, locale=locale).splitlines() if "iltiazem" in line)
    assert said in line


def test_oral_timolol_is_named_without_a_route() -> None:
    line = next(line for line in _therapy_detail(medication("10600", "rxnorm", text="Timolol 10 mg tablet"),
                                                 locale="en").splitlines() if "iltiazem" in line)
    assert "with timolol (beta-blocker)" in line


def test_ivig_caution_in_renal_impairment_or_age() -> None:
    plan = dystrophic(lab("98979-8", 70, "mL/min/{1.73_m2}"))
    assert "ivig" in options(plan)
    assert ("ivig", "renal-thrombosis-risk") in cautions(plan)


def test_calciphylaxis_plan_stops_warfarin_and_warns_on_thiosulfate() -> None:
    _, assessment = run(patient("p1"), condition("Z99.2"), condition("237900002", "snomed"),
                        condition("46742003", "snomed", sites=(THIGH,)), PAIN,
                        medication("B01AA03", text="Warfarin"), medication("A11CC04", text="Calcitriol"))
    assert assessment.subtype == "calciphylaxis"
    plan = options(assessment)
    assert plan[0] == "wound-care"
    assert {"sodium-thiosulfate-iv", "stop-warfarin", "stop-calcium-vitamin-d"} <= set(plan)
    assert "warfarin" not in plan
    assert ("sodium-thiosulfate-iv", "acidosis-sodium-load") in cautions(assessment)
    assert ("stop-warfarin", "active-warfarin") in cautions(assessment)
    assert assessment.therapy is not None
    assert assessment.therapy.touches_current_medication


def test_cinacalcet_cautions() -> None:
    # Metastatic on CKD G4 (not dialysis): cinacalcet offered with the off-label caution (S14b);
    # with hypocalcaemia it is not offered (S14a).
    base = [patient("p1"), condition("L94.2", sites=(KNEE, ELBOW)), condition("N18.4"), condition("N25.81"),
            lab("2777-1", 6.2, "mg/dL"), lab("2731-8", 700, "pg/mL")]
    _, high_ca = run(*base, lab("17861-6", 10.9, "mg/dL"), lab("1751-7", 4.0, "g/dL"))
    assert high_ca.subtype == "metastatic"
    assert ("cinacalcet", "not-on-dialysis") in cautions(high_ca)
    assert "cinacalcet" in options(high_ca)
    _, low_ca = run(*base, lab("17861-6", 7.8, "mg/dL"), lab("1751-7", 4.0, "g/dL"))
    assert low_ca.subtype == "metastatic"
    assert ("cinacalcet", "hypocalcemia") in cautions(low_ca)
    assert "cinacalcet" not in options(low_ca)


def test_an_unclear_subtype_gets_only_the_options_that_hold_for_every_subtype() -> None:
    facts, assessment = run(patient("p1"), condition("L94.2"))
    assert assessment.subtype == "indeterminate"
    assert assessment.therapy is not None
    assert assessment.therapy.options == ()
    cards = render_cards(assessment, facts, locale="en", seed="t")
    assert "therapy-options" not in [c.extension["calcinosis-cds"]["kind"] for c in cards]
