"""Default reference ranges and qualitative bands, used only when the lab sent none.

Implements the clinical brief §4e (default adult ranges) with product rule C3 (§5e): when an Observation has
no ``referenceRange`` the default is the FIRST range §4e gives for the patient's age; intact PTH is
15–65 pg/mL. Values are in the canonical units of :mod:`fhir_mappings.units`. Where §4e gives an adult range
and says children differ without giving their range (ALP, ACE, aldolase, 1,25-D, phosphate 13–17 y), no
default is returned rather than an adult range applied to a child.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fhir_mappings.facts import Qualitative, ReferenceRange

__all__ = ["default_range", "no_default_for_age", "qualitative_from_band"]


@dataclass(frozen=True, slots=True)
class _Band:
    low: float | None
    high: float | None
    min_age: float = 0.0
    max_age: float = 200.0
    sex: str | None = None


# One entry per (analyte, age band[, sex]); the first matching entry wins (rule C3).
_DEFAULTS: Final[dict[str, tuple[_Band, ...]]] = {
    "calcium_total": (_Band(8.5, 10.5),),
    # §9.6: ionised 1.1-1.35 mmol/L (x 4.008 = 4.4-5.4 mg/dL); §4b prefers it when one exists (issue 15 review).
    "calcium_ionized": (_Band(4.4, 5.4),),
    "phosphate": (_Band(2.5, 4.5, min_age=18), _Band(4.0, 7.0, max_age=13)),
    "pth_intact": (_Band(15.0, 65.0),),
    # §4e lists 25-OH-D as bands; the first interval that is a normal range is "20–50 optimal".
    "vitd_25oh": (_Band(20.0, 50.0),),
    "vitd_1_25": (_Band(18.0, 64.0, min_age=16, sex="male"), _Band(18.0, 78.0, min_age=16, sex="female")),
    "alp": (_Band(40.0, 129.0, min_age=19, sex="male"), _Band(35.0, 104.0, min_age=17, sex="female")),
    "magnesium": (_Band(1.6, 2.6),),
    "albumin": (_Band(3.5, 5.0),),
    "ace": (_Band(16.0, 85.0, min_age=18),),
    "aldolase": (_Band(None, 7.7, min_age=17),),
    "bicarbonate": (_Band(22.0, 29.0),),
    "dsdna": (_Band(None, 30.0),),
}

_DEFAULT_CACHE: dict[tuple[str, int | None, str], ReferenceRange | None] = {}


def default_range(analyte: str, age_years: float | None, sex: str) -> ReferenceRange | None:
    """The §4e default for this analyte, age and sex, or None when the brief gives none."""
    bands = _DEFAULTS.get(analyte)
    if bands is None:
        return None
    # Whole years are enough for every §4e band edge; caching keeps the per-Observation cost to a dict hit.
    key = (analyte, None if age_years is None else int(age_years), sex)
    if key in _DEFAULT_CACHE:
        return _DEFAULT_CACHE[key]
    result: ReferenceRange | None = None
    for band in bands:
        if band.sex is not None and band.sex != sex:
            continue
        age_bound = band.min_age > 0 or band.max_age < 200
        if age_bound and (age_years is None or not band.min_age <= age_years < band.max_age):
            continue
        result = ReferenceRange(band.low, band.high, "default")
        break
    _DEFAULT_CACHE[key] = result
    return result


def no_default_for_age(analyte: str, age_years: float | None, sex: str) -> bool:
    """The brief gives this analyte a default range for other ages but not for this one (phosphate at 13-17)."""
    # An unknown age is its own gap (the card names the missing birth date), not an age without a range.
    return age_years is not None and analyte in _DEFAULTS and default_range(analyte, age_years, sex) is None


def qualitative_from_band(analyte: str, value: float, unit: str) -> Qualitative | None:
    """Negative/equivocal/positive from the §4e antibody bands, only in the unit those bands are stated in."""
    if analyte == "ana" and unit == "{titer}":
        return "positive" if value >= 80 else "negative"
    if analyte == "dsdna" and unit == "[IU]/mL":
        return "negative" if value < 30 else ("equivocal" if value <= 75 else "positive")
    if analyte == "scl70" and unit in {"AU/mL", "[arb'U]/mL"}:
        return "negative" if value <= 29 else ("equivocal" if value <= 40 else "positive")
    if analyte == "rnapol3" and unit in {"U", "[arb'U]"}:
        return "negative" if value <= 19 else "positive"
    return None
