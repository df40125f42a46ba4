"""Derived values: CKD-EPI 2021 (brief §4d), KDIGO G categories, Payne correction (§4b)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_mappings.derived import egfr_ckd_epi_2021, kdigo_g_category, payne_corrected_calcium


def test_egfr_published_test_vector() -> None:
    # kidney.org example reproduced in the brief §4d: Scr 1.2 mg/dL, 55-year-old man -> 71 (71.4 unrounded).
    egfr = egfr_ckd_epi_2021(1.2, 55, "male")
    assert round(egfr) == 71
    assert egfr == pytest.approx(71.4, abs=0.05)


def test_egfr_female_coefficients() -> None:
    # Same creatinine and age: κ 0.7, α −0.241 and the 1.012 factor give a lower value for a woman at 1.2 mg/dL.
    assert round(egfr_ckd_epi_2021(1.2, 55, "female")) == 53
    # Below κ the α branch applies: 0.6 mg/dL, 40-year-old woman.
    assert egfr_ckd_epi_2021(0.6, 40, "female") == pytest.approx(
        142 * (0.6 / 0.7) ** -0.241 * 0.9938**40 * 1.012, rel=1e-12
    )


def test_egfr_is_not_computed_under_18() -> None:
    with pytest.raises(ValueError, match="18"):
        egfr_ckd_epi_2021(0.5, 17.9, "female")


@given(
    sex=st.sampled_from(["female", "male"]),
    age=st.floats(min_value=18, max_value=110),
    low=st.floats(min_value=0.1, max_value=20),
    delta=st.floats(min_value=0.01, max_value=5),
)
def test_egfr_decreases_as_creatinine_rises(sex: str, age: float, low: float, delta: float) -> None:
    assert egfr_ckd_epi_2021(low + delta, age, sex) < egfr_ckd_epi_2021(low, age, sex)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("egfr", "category"),
    [
        (95, "G1"),
        (90, "G1"),
        (89.4, "G2"),
        (60, "G2"),
        (59.6, "G2"),
        (59.4, "G3a"),
        (45, "G3a"),
        (44, "G3b"),
        (30, "G3b"),
        (29, "G4"),
        (15, "G4"),
        (14.4, "G5"),
        (5, "G5"),
    ],
)
def test_kdigo_categories_on_the_whole_number_labs_report(egfr: float, category: str) -> None:
    assert kdigo_g_category(egfr) == category


def test_payne_formula() -> None:
    assert payne_corrected_calcium(8.0, 2.5) == pytest.approx(9.2)
    assert payne_corrected_calcium(10.0, 4.0) == pytest.approx(10.0)
