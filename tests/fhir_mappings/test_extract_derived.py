"""Derived values in PatientFacts: corrected calcium (§4b, C2), Ca × P (§4c, §5d), eGFR (§4d), CKD stage."""

from __future__ import annotations

import pytest

from fhir_mappings import MappingOptions
from tests.fhir_mappings.builders import ICD10CM, SNOMED, condition, facts, observation

CA = "17861-6"
ALB = "1751-7"
P = "2777-1"
DAY1 = "2026-02-20T08:00:00Z"


def test_payne_correction_with_albumin_within_48_hours() -> None:
    result = facts(
        observations=[
            observation(CA, rid="ca", value=8.0, unit="mg/dL", when=DAY1),
            observation(ALB, rid="alb", value=25, unit="g/L", when="2026-02-21T20:00:00Z"),  # 36 h later
        ]
    )
    corrected = result.derived["calcium_corrected"]
    assert corrected.value == pytest.approx(8.0 + 0.8 * (4.0 - 2.5))
    assert corrected.flags == ()
    assert [v.provenance.resource_id for v in corrected.inputs] == ["ca", "alb"]


def test_albumin_outside_48_hours_leaves_calcium_uncorrected_rule_c2() -> None:
    result = facts(
        observations=[
            observation(CA, value=8.0, unit="mg/dL", when=DAY1),
            observation(ALB, value=2.5, unit="g/dL", when="2026-02-23T09:00:00Z"),  # 73 h later
        ]
    )
    corrected = result.derived["calcium_corrected"]
    assert corrected.value == 8.0
    assert corrected.flags == ("uncorrected",)


def test_no_correction_at_albumin_4_unless_configured() -> None:
    observations = [
        observation(CA, value=10.0, unit="mg/dL", when=DAY1),
        observation(ALB, value=4.5, unit="g/dL", when=DAY1),
    ]
    default = facts(observations=observations).derived["calcium_corrected"]
    assert default.value == 10.0
    assert default.flags == ("albumin-at-least-4",)
    configured = facts(
        observations=observations, options=MappingOptions(correct_calcium_when_albumin_at_least_4=True)
    ).derived["calcium_corrected"]
    assert configured.value == pytest.approx(9.6)


def test_ionized_calcium_within_48_hours_replaces_the_uncorrected_label() -> None:
    result = facts(
        observations=[
            observation(CA, value=9.0, unit="mg/dL", when=DAY1),
            observation("1995-0", rid="ion", value=1.3, unit="mmol/L", when=DAY1),
        ]
    )
    corrected = result.derived["calcium_corrected"]
    assert corrected.flags == ("ionized-available",)
    assert corrected.inputs[1].provenance.resource_id == "ion"
    assert result.latest("calcium_ionized").value == pytest.approx(1.3 * 4.008)  # type: ignore[union-attr]


def test_ca_x_p_from_draws_within_seven_days() -> None:
    result = facts(
        observations=[
            observation(CA, value=10.0, unit="mg/dL", when=DAY1),
            observation(ALB, value=3.0, unit="g/dL", when=DAY1),
            observation(P, value=7.0, unit="mg/dL", when="2026-02-26T08:00:00Z"),  # 6 days later
        ]
    )
    product = result.derived["ca_x_p"]
    assert product.value == pytest.approx((10.0 + 0.8) * 7.0)
    assert product.unit == "mg2/dL2"


def test_no_ca_x_p_when_draws_are_more_than_seven_days_apart() -> None:
    observations = [
        observation(CA, value=10.0, unit="mg/dL", when=DAY1),
        observation(P, value=7.0, unit="mg/dL", when="2026-02-28T09:00:00Z"),  # 8 days + 1 h
    ]
    assert "ca_x_p" not in facts(observations=observations).derived
    wider = facts(observations=observations, options=MappingOptions(ca_p_pairing_hours=24 * 9))
    assert wider.derived["ca_x_p"].flags == ("uncorrected",)


def test_ca_x_p_in_si_units_is_reported_in_mg2_dl2() -> None:
    result = facts(
        observations=[
            observation("2000-8", value=2.5, unit="mmol/L", when=DAY1),
            observation("14879-1", value=2.0, unit="mmol/L", when=DAY1),
        ]
    )
    # §4a: mmol²/L² × 12.41 = mg²/dL²; 2.5 × 2.0 = 5.0 mmol²/L².
    assert result.derived["ca_x_p"].value == pytest.approx(5.0 * 12.41, rel=1e-3)


def test_old_values_never_make_a_derived_value_rule_c1() -> None:
    result = facts(
        observations=[
            observation(CA, value=12.0, unit="mg/dL", when="2025-06-01T08:00:00Z"),
            observation(P, value=8.0, unit="mg/dL", when="2025-06-01T08:00:00Z"),
        ]
    )
    assert result.derived == {}


def test_egfr_is_computed_from_creatinine_when_none_is_reported() -> None:
    man = {"resourceType": "Patient", "id": "m", "birthDate": "1970-06-15", "gender": "male"}
    result = facts(patient=man, observations=[observation("14682-9", value=1.2 * 88.4, unit="umol/L")])
    egfr = result.derived["egfr_ckd_epi_2021"]
    # Creatinine 106.08 µmol/L = 1.2 mg/dL; 55.7 years old on NOW (fractional age, as the equation takes it).
    assert egfr.value == pytest.approx(142 * (1.2 / 0.9) ** -1.200 * 0.9938**result.age_years)  # type: ignore[operator]
    assert round(egfr.value) == 71
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.source) == ("G2", "computed-egfr")


def test_egfr_is_not_computed_when_a_current_egfr_is_reported() -> None:
    result = facts(
        observations=[
            observation("2160-0", value=1.2, unit="mg/dL"),
            observation("98979-8", value=42, unit="mL/min/{1.73_m2}"),
        ]
    )
    assert "egfr_ckd_epi_2021" not in result.derived
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.source) == ("G3b", "egfr")


def test_egfr_is_not_computed_for_a_child() -> None:
    child = {"resourceType": "Patient", "id": "k", "birthDate": "2015-01-01", "gender": "female"}
    result = facts(patient=child, observations=[observation("2160-0", value=0.5, unit="mg/dL")])
    assert "egfr_ckd_epi_2021" not in result.derived
    assert [i.kind for i in result.issues] == ["egfr-not-computed"]


def test_a_current_egfr_supersedes_an_older_coded_stage() -> None:
    # Issue 10: a current laboratory value beats an old coded stage, and the discrepancy is shown.
    coded_worse = facts(
        observations=[observation("98979-8", value=50, unit="mL/min/{1.73_m2}")],
        conditions=[condition("N18.4", system=ICD10CM, recordedDate="2019-03-01")],
    )
    assert coded_worse.ckd is not None
    assert (coded_worse.ckd.stage, coded_worse.ckd.source) == ("G3a", "egfr")
    (discrepancy,) = coded_worse.ckd.discrepancies
    assert "coded 2019-03-01" in discrepancy
    assert "eGFR 50 on 2026-02-20" in discrepancy
    assert coded_worse.active_conditions("ckd_4") == ()
    egfr_worse = facts(
        observations=[observation("98979-8", value=12, unit="mL/min/{1.73_m2}")],
        conditions=[condition("N18.32", system=ICD10CM)],
    )
    assert egfr_worse.ckd is not None
    assert (egfr_worse.ckd.stage, egfr_worse.ckd.source) == ("G5", "egfr")


def test_a_legacy_esrd_code_does_not_outweigh_an_egfr_of_95() -> None:
    result = facts(
        observations=[observation("98979-8", value=95, unit="mL/min/{1.73_m2}")],
        conditions=[condition("N18.6", system=ICD10CM, rid="esrd", recordedDate="2019-05-02"),
                    condition("Z99.2", system=ICD10CM, rid="hd", recordedDate="2019-05-02")],
    )
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.dialysis) == ("G1", False)
    assert len(result.ckd.discrepancies) == 2
    assert result.active_conditions("esrd", "dialysis") == ()


def test_a_dialysis_code_stands_beside_a_post_dialysis_egfr() -> None:
    # A creatinine drawn after a session can give an eGFR of 15-29 in a patient still on dialysis.
    result = facts(
        observations=[observation("98979-8", value=18, unit="mL/min/{1.73_m2}")],
        conditions=[condition("Z99.2", system=ICD10CM)],
    )
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.dialysis, result.ckd.discrepancies) == ("G5", True, ())


def test_french_esrd_is_n18_5_with_z99_2() -> None:
    result = facts(
        conditions=[
            condition("N18.5", system="https://smt.esante.gouv.fr/terminologie-cim-10", rid="a"),
            condition("Z992", system="https://smt.esante.gouv.fr/terminologie-cim-10", rid="b"),
        ]
    )
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.dialysis, result.ckd.transplant) == ("G5", True, False)


def test_esrd_on_dialysis_code_sets_dialysis_and_transplant_code_sets_transplant() -> None:
    result = facts(conditions=[condition("236435004", rid="a"), condition("Z94.0", system=ICD10CM, rid="b")])
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.dialysis, result.ckd.transplant) == ("G5", True, True)


def test_resolved_ckd_code_does_not_stage() -> None:
    result = facts(conditions=[condition("46177005", clinical="resolved", system=SNOMED)])
    assert result.ckd is None
