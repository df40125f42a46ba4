"""Unit conversion to one canonical unit per analyte: brief §4a and §9.6."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_mappings.facts import DataIssue
from fhir_mappings.units import Converted, canonical_unit, from_canonical, normalise_unit, to_canonical

# (analyte, value, UCUM code sent, expected canonical value, canonical unit)
CASES = [
    ("calcium_total", 2.5, "mmol/L", 10.02, "mg/dL"),
    ("calcium_total", 9.4, "mg/dL", 9.4, "mg/dL"),
    ("calcium_ionized", 1.2, "mmol/L", 4.8096, "mg/dL"),
    ("calcium_corrected", 2.4, "mmol/L", 9.6192, "mg/dL"),
    ("phosphate", 1.0, "mmol/L", 3.097, "mg/dL"),
    ("creatinine", 88.4, "umol/L", 1.0, "mg/dL"),
    ("creatinine", 176.8, "µmol/L", 2.0, "mg/dL"),
    ("albumin", 40.0, "g/L", 4.0, "g/dL"),
    ("pth_intact", 65.0, "ng/L", 65.0, "pg/mL"),
    ("pth_intact", 10.6, "pmol/L", 100.0, "pg/mL"),
    ("vitd_25oh", 249.6, "nmol/L", 100.0, "ng/mL"),
    ("vitd_1_25", 130.0, "pmol/L", 50.0, "pg/mL"),
    ("magnesium", 0.8228, "mmol/L", 2.0, "mg/dL"),
    ("magnesium", 1.6456, "meq/L", 2.0, "mg/dL"),
    ("magnesium", 1.6456, "mEq/L", 2.0, "mg/dL"),
    ("bicarbonate", 31.0, "mEq/L", 31.0, "mmol/L"),
    ("egfr", 42.0, "mL/min/{1.73_m2}", 42.0, "mL/min/{1.73_m2}"),
    ("crcl_cg", 28.0, "mL/min", 28.0, "mL/min"),
    ("urea_nitrogen", 3.57, "mmol/L", 10.0, "mg/dL"),
    ("urea", 21.4, "mg/dL", 3.57, "mmol/L"),
    ("urea", 6.5, "mmol/L", 6.5, "mmol/L"),
    ("alp", 250.0, "U/L", 250.0, "U/L"),
    ("ck", 90.0, "U/L", 90.0, "U/L"),
    ("hba1c", 7.1, "%", 7.1, "%"),
    ("bmi", 31.2, "kg/m2", 31.2, "kg/m2"),
    ("c3", 0.9, "g/L", 90.0, "mg/dL"),
    ("c4", 0.2, "g/L", 20.0, "mg/dL"),
    ("dsdna", 80.0, "[IU]/mL", 80.0, "[IU]/mL"),
]


@pytest.mark.parametrize(("analyte", "value", "code", "expected", "unit"), CASES)
def test_converts_to_the_canonical_unit(analyte: str, value: float, code: str, expected: float, unit: str) -> None:
    converted = to_canonical(analyte, value, code=code, unit=None)
    assert isinstance(converted, Converted)
    assert converted.unit == unit == canonical_unit(analyte)
    assert converted.value == pytest.approx(expected, rel=1e-4)


def test_calcium_factor_matches_the_brief_in_both_directions() -> None:
    # §4a: mmol/L = mg/dL × 0.2495 and mg/dL = mmol/L × 4.008 (the two agree to 1e-3).
    converted = to_canonical("calcium_total", 10.0, code="mg/dL", unit=None)
    assert isinstance(converted, Converted)
    assert from_canonical("calcium_total", converted.value, "mmol/L") == pytest.approx(10.0 * 0.2495, rel=1e-3)


def test_ucum_code_wins_over_the_display_unit() -> None:
    converted = to_canonical("calcium_total", 2.4, code="mmol/L", unit="mg/dL")
    assert isinstance(converted, Converted)
    assert converted.value == pytest.approx(9.6192)


def test_display_unit_is_the_fallback_when_the_code_is_absent_or_not_ucum() -> None:
    for code in (None, "258718000"):
        converted = to_canonical("creatinine", 97.0, code=code, unit="µmol/L")
        assert isinstance(converted, Converted)
        assert converted.value == pytest.approx(97.0 / 88.4)


@pytest.mark.parametrize(
    ("analyte", "code", "unit"),
    [
        ("calcium_total", "mg", None),
        ("creatinine", "mmol/L", None),
        ("egfr", "mL/s", None),  # a flow in another unit: the brief gives no conversion
        ("hba1c", "mmol/mol", None),  # IFCC units: the brief gives no conversion to %
        ("albumin", None, "gm per litre"),
    ],
)
def test_unknown_unit_is_a_data_issue_and_the_value_is_not_used(analyte: str, code: str, unit: str) -> None:
    result = to_canonical(analyte, 1.0, code=code, unit=unit)
    assert isinstance(result, DataIssue)
    assert result.kind == "unknown-unit"
    assert "not used" in result.detail


@pytest.mark.parametrize(
    ("analyte", "sent", "value", "expected"),
    [
        # Spellings labs and vendors send for the same units (issue 11).
        ("egfr", "mL/min/1.73m2", 42.0, 42.0),
        ("egfr", "mL/min/1.73.m2", 42.0, 42.0),
        ("egfr", "ml/min/1,73 m²", 42.0, 42.0),
        ("egfr", "mL/min/{1.73_m2}", 42.0, 42.0),
        # An eGFR code is per 1.73 m² by definition: "mL/min" there is read as such (flagged by the reader).
        ("egfr", "mL/min", 42.0, 42.0),
        ("alp", "[IU]/L", 140.0, 140.0),
        ("alp", "IU/L", 140.0, 140.0),
        ("alp", "UI/L", 140.0, 140.0),
        ("calcium_total", "mg/dl", 9.8, 9.8),
        # Calcium is divalent: 5.0 mEq/L = 2.5 mmol/L = 10.02 mg/dL.
        ("calcium_total", "mEq/L", 5.0, 10.02),
    ],
)
def test_common_unit_spellings_are_read(analyte: str, sent: str, value: float, expected: float) -> None:
    converted = to_canonical(analyte, value, code=None, unit=sent)
    assert isinstance(converted, Converted)
    assert converted.value == pytest.approx(expected)


def test_missing_unit_is_a_data_issue() -> None:
    result = to_canonical("phosphate", 1.2, code=None, unit=None)
    assert isinstance(result, DataIssue)
    assert result.kind == "missing-unit"


def test_antibody_units_are_kept_as_sent() -> None:
    converted = to_canonical("scl70", 35.0, code=None, unit="AU/mL")
    assert isinstance(converted, Converted)
    assert (converted.value, converted.unit) == (35.0, "AU/mL")


@pytest.mark.parametrize("spelling", ["umol/L", "µmol/L", "μmol/L", "UMOL/L", " umol/l "])
def test_micro_spellings_are_one_unit(spelling: str) -> None:
    assert normalise_unit(spelling) == "umol/L"


CONVERTIBLE = [(analyte, code) for analyte, _, code, _, _ in CASES]
values = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(case=st.sampled_from(CONVERTIBLE), value=values)
def test_round_trip_to_canonical_and_back(case: tuple[str, str], value: float) -> None:
    analyte, code = case
    converted = to_canonical(analyte, value, code=code, unit=None)
    assert isinstance(converted, Converted)
    assert math.isclose(from_canonical(analyte, converted.value, code), value, rel_tol=1e-9)


@given(case=st.sampled_from(CONVERTIBLE), a=values, b=values)
def test_conversion_is_monotonic(case: tuple[str, str], a: float, b: float) -> None:
    analyte, code = case
    low, high = sorted((a, b))
    converted_low = to_canonical(analyte, low, code=code, unit=None)
    converted_high = to_canonical(analyte, high, code=code, unit=None)
    assert isinstance(converted_low, Converted)
    assert isinstance(converted_high, Converted)
    assert converted_low.value <= converted_high.value


def test_from_canonical_refuses_a_unit_of_another_analyte() -> None:
    with pytest.raises(ValueError, match="not a unit"):
        from_canonical("albumin", 4.0, "mmol/L")
