"""build_facts on laboratory Observations: brief §1, §4, §5b and rules C1–C3 (§5e)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_mappings import MappingOptions
from tests.fhir_mappings.builders import NOW, facts, observation, quantity

CHILD = {"resourceType": "Patient", "id": "kid", "birthDate": "2018-01-10", "gender": "male"}


def issue_kinds(result: Any) -> list[str]:
    return [issue.kind for issue in result.issues]


def test_si_calcium_is_read_in_mg_dl_with_provenance() -> None:
    obs = observation("2000-8", rid="ca1", value=2.61, unit="mmol/L")
    latest = facts(observations=[obs]).latest("calcium_total")
    assert latest is not None
    assert latest.value == pytest.approx(10.461, rel=1e-4)
    assert latest.unit == "mg/dL"
    assert latest.effective == datetime(2026, 2, 20, 8, 0, tzinfo=UTC)
    assert latest.provenance.reference == "Observation/ca1"
    assert (latest.provenance.system, latest.provenance.code) == ("http://loinc.org", "2000-8")
    assert latest.provenance.original == "2.61 mmol/L"


def test_comparator_is_kept_and_flagged() -> None:
    obs = observation("2731-8", valueQuantity=quantity(5, "pg/mL", comparator="<"))
    latest = facts(observations=[obs]).latest("pth_intact")
    assert latest is not None
    assert (latest.value, latest.comparator) == (5.0, "<")
    assert "comparator" in latest.flags
    assert latest.is_low is True  # below the default 15 pg/mL lower limit


@pytest.mark.parametrize(
    ("text", "value", "comparator"),
    [("2.4 mmol/L", 2.4 * 3.097, None), ("< 0,5 mmol/L", 0.5 * 3.097, "<"), ("≥1.7 mmol/L", 1.7 * 3.097, ">=")],
)
def test_numeric_value_string_with_its_unit(text: str, value: float, comparator: str | None) -> None:
    latest = facts(observations=[observation("14879-1", valueString=text)]).latest("phosphate")
    assert latest is not None
    assert latest.value == pytest.approx(value)
    assert latest.comparator == comparator
    assert "value-string" in latest.flags


def test_bare_number_string_takes_the_unit_of_the_labs_own_range() -> None:
    obs = observation(
        "14879-1",
        valueString="2.4",
        referenceRange=[{"low": quantity(0.81, "mmol/L"), "high": quantity(1.45, "mmol/L")}],
    )
    latest = facts(observations=[obs]).latest("phosphate")
    assert latest is not None
    assert latest.value == pytest.approx(2.4 * 3.097)
    assert "unit-from-reference-range" in latest.flags
    assert latest.is_high is True


def test_bare_number_string_without_any_unit_is_not_guessed() -> None:
    result = facts(observations=[observation("2777-1", valueString="2.4")])
    assert result.latest("phosphate") is None
    assert issue_kinds(result) == ["missing-unit"]


def test_unknown_unit_is_reported_and_the_value_unused() -> None:
    result = facts(observations=[observation("17861-6", value=9.5, unit="mg/100mL")])
    assert "calcium_total" not in result.labs
    assert issue_kinds(result) == ["unknown-unit"]
    assert result.issues[0].provenance is not None
    assert result.issues[0].provenance.reference == "Observation/o1"


def test_data_absent_reason_is_skipped_and_reported() -> None:
    obs = observation("2731-8", dataAbsentReason={"coding": [{"code": "error"}], "text": "haemolysed"})
    result = facts(observations=[obs])
    assert result.latest("pth_intact") is None
    assert issue_kinds(result) == ["data-absent"]
    assert "haemolysed" in result.issues[0].detail


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_erroneous_and_cancelled_results_are_ignored(status: str) -> None:
    wrong = observation("17861-6", rid="bad", value=14.5, unit="mg/dL", status=status, when="2026-02-28T08:00:00Z")
    right = observation("17861-6", rid="good", value=9.1, unit="mg/dL")
    result = facts(observations=[wrong, right])
    assert result.latest("calcium_total").provenance.resource_id == "good"  # type: ignore[union-attr]
    assert [v.provenance.resource_id for v in result.labs["calcium_total"].history] == ["good"]


def test_preliminary_result_is_used_and_flagged() -> None:
    latest = facts(observations=[observation("2777-1", value=5.1, unit="mg/dL", status="preliminary")]).latest(
        "phosphate"
    )
    assert latest is not None
    assert latest.value == 5.1
    assert "preliminary" in latest.flags


def test_result_without_effective_date_is_history_only() -> None:
    dated = observation("2777-1", rid="dated", value=3.0, unit="mg/dL", when="2026-01-10T08:00:00Z")
    undated = observation("2777-1", rid="undated", value=6.0, unit="mg/dL", when=None)
    series = facts(observations=[undated, dated]).labs["phosphate"]
    assert series.latest is not None
    assert series.latest.provenance.resource_id == "dated"
    assert [v.provenance.resource_id for v in series.history] == ["dated", "undated"]
    assert "no-effective-date" in series.history[1].flags


def test_effective_period_start_is_the_draw_time() -> None:
    obs = observation("2777-1", value=3.0, unit="mg/dL", when=None, effectivePeriod={"start": "2026-02-01"})
    latest = facts(observations=[obs]).latest("phosphate")
    assert latest is not None
    assert latest.effective == datetime(2026, 2, 1, tzinfo=UTC)


def test_chemistry_look_back_window_is_90_days_by_default() -> None:
    old = observation("17861-6", rid="old", value=11.5, unit="mg/dL", when="2025-11-20T08:00:00Z")  # 101 days
    result = facts(observations=[old])
    assert result.latest("calcium_total") is None
    assert result.labs["calcium_total"].history[0].value == 11.5
    wider = facts(observations=[old], options=MappingOptions(chemistry_lookback_days=120))
    assert wider.latest("calcium_total") is not None


def test_serology_look_back_window_is_365_days_by_default() -> None:
    ana = observation("8061-4", valueString="Positive", when="2025-05-01T08:00:00Z")  # 304 days before NOW
    assert facts(observations=[ana]).latest("ana") is not None
    older = observation("8061-4", valueString="Positive", when="2025-01-01T08:00:00Z")  # 424 days
    assert facts(observations=[older]).latest("ana") is None


def test_newest_current_value_wins_and_history_is_newest_first() -> None:
    values = [
        observation("17861-6", rid="a", value=9.0, unit="mg/dL", when="2026-01-05T08:00:00Z"),
        observation("17861-6", rid="c", value=9.6, unit="mg/dL", when="2026-02-25T08:00:00Z"),
        observation("2000-8", rid="b", value=2.4, unit="mmol/L", when="2026-02-01T08:00:00Z"),
    ]
    series = facts(observations=values).labs["calcium_total"]
    assert series.latest is not None
    assert series.latest.provenance.resource_id == "c"
    assert [v.provenance.resource_id for v in series.history] == ["c", "b", "a"]


def test_lab_reference_range_is_converted_and_preferred_over_the_default() -> None:
    obs = observation(
        "2000-8",
        value=2.7,
        unit="mmol/L",
        referenceRange=[{"low": quantity(2.2, "mmol/L"), "high": quantity(2.6, "mmol/L")}],
    )
    latest = facts(observations=[obs]).latest("calcium_total")
    assert latest is not None
    assert latest.reference_range is not None
    assert latest.reference_range.source == "observation"
    assert latest.reference_range.high == pytest.approx(2.6 * 4.008)
    assert latest.is_high is True


def test_default_range_is_the_first_range_of_the_brief() -> None:
    pth = facts(observations=[observation("2731-8", value=70, unit="pg/mL")]).latest("pth_intact")
    assert pth is not None
    assert pth.reference_range is not None
    assert (pth.reference_range.low, pth.reference_range.high, pth.reference_range.source) == (15.0, 65.0, "default")
    assert pth.is_high is True


def test_phosphate_default_range_for_a_child() -> None:
    child = facts(patient=CHILD, observations=[observation("2777-1", value=5.5, unit="mg/dL")]).latest("phosphate")
    adult = facts(observations=[observation("2777-1", value=5.5, unit="mg/dL")]).latest("phosphate")
    assert child is not None
    assert child.reference_range is not None
    assert (child.reference_range.low, child.reference_range.high) == (4.0, 7.0)
    assert child.is_high is False
    assert adult is not None
    assert adult.is_high is True


def test_interpretation_code_is_kept() -> None:
    obs = observation("2777-1", value=4.0, unit="mg/dL", interpretation=[{"coding": [{"code": "H"}]}])
    latest = facts(observations=[obs]).latest("phosphate")
    assert latest is not None
    assert latest.interpretation == "H"
    assert latest.is_high is True


@pytest.mark.parametrize(
    ("value", "positive"),
    [
        ({"valueString": "Negative"}, False),
        ({"valueString": "Positive"}, True),
        ({"valueString": "Négatif"}, False),
        ({"valueString": "POSITIF"}, True),
        ({"valueCodeableConcept": {"coding": [{"display": "Detected"}]}}, True),
        ({"valueCodeableConcept": {"text": "Not detected"}}, False),
    ],
)
def test_qualitative_antibody_results(value: dict[str, Any], positive: bool) -> None:
    latest = facts(observations=[observation("16570-4", **value)]).latest("centromere")
    assert latest is not None
    assert latest.value is None
    assert latest.is_positive is positive


@pytest.mark.parametrize(("titer", "positive"), [("1:160", True), ("1:80", True), ("1:40", False), ("1/320", True)])
def test_ana_titers_use_the_1_80_threshold(titer: str, positive: bool) -> None:
    latest = facts(observations=[observation("5048-4", valueString=titer)]).latest("ana")
    assert latest is not None
    assert latest.unit == "{titer}"
    assert latest.is_positive is positive


def test_titer_with_words_keeps_the_labs_word() -> None:
    latest = facts(observations=[observation("5048-4", valueString="Positive 1:40")]).latest("ana")
    assert latest is not None
    assert latest.value == 40
    assert latest.is_positive is True


def test_ana_titer_as_ratio() -> None:
    obs = observation("5048-4", valueRatio={"numerator": {"value": 1}, "denominator": {"value": 640}})
    latest = facts(observations=[obs]).latest("ana")
    assert latest is not None
    assert (latest.value, latest.is_positive) == (640, True)


def test_dsdna_bands_when_the_lab_gives_no_range() -> None:
    low = facts(observations=[observation("5130-0", value=12, unit="[IU]/mL")]).latest("dsdna")
    high = facts(observations=[observation("5130-0", value=120, unit="[IU]/mL")]).latest("dsdna")
    assert low is not None
    assert low.is_positive is False
    assert high is not None
    assert high.is_positive is True


def test_synthea_calcium_in_blood_is_not_read() -> None:
    # 49765-1 "Calcium [Mass/volume] in Blood" is not in the brief's LOINC table.
    result = facts(observations=[observation("49765-1", value=9.9, unit="mg/dL")])
    assert result.labs == {}
    assert result.issues == ()


def test_malformed_observation_is_skipped_and_reported() -> None:
    bad = observation("17861-6", rid="bad", valueQuantity={"value": "not a number", "unit": "mg/dL"})
    good = observation("2777-1", rid="good", value=3.3, unit="mg/dL")
    broken = observation("2777-1", rid="broken", status=["final"])
    result = facts(observations=[bad, good, broken])
    assert result.latest("phosphate") is not None
    assert "calcium_total" not in result.labs
    assert sorted(issue_kinds(result)) == ["malformed-resource", "unusable-value"]


def test_wrong_resource_type_in_the_observation_list_is_reported() -> None:
    result = facts(observations=[{"resourceType": "Patient", "id": "x"}, "junk"])  # type: ignore[list-item]
    assert issue_kinds(result) == ["unexpected-resource", "unexpected-resource"]


def test_egfr_prefers_ckd_epi_2021_among_current_values() -> None:
    values = [
        observation("98979-8", rid="ckdepi", value=38, unit="mL/min/{1.73_m2}", when="2026-02-01T08:00:00Z"),
        observation("33914-3", rid="mdrd", value=45, unit="mL/min/{1.73_m2}", when="2026-02-20T08:00:00Z"),
    ]
    latest = facts(observations=values).latest("egfr")
    assert latest is not None
    assert latest.provenance.resource_id == "ckdepi"


def test_age_and_sex_from_the_patient() -> None:
    result = facts(observations=[])
    assert result.sex == "female"
    assert result.birth_date is not None
    assert result.age_years == pytest.approx(55.7, abs=0.1)
    # A woman of 55.7 is outside the 12-55 band the pregnancy rules apply to (safety addendum S27).
    assert result.pregnancy.status == "not-applicable"
    assert result.now == NOW


def test_naive_now_is_read_as_utc() -> None:
    result = facts(now=datetime(2026, 3, 1, 12, 0))
    assert result.now.tzinfo is not None
