"""Derived values: corrected calcium, Ca × P, CKD-EPI 2021 eGFR and the KDIGO G category.

Implements the clinical brief §4b (Payne correction, only with albumin within 48 h, ionized calcium
preferred, no correction at albumin ≥ 4.0 g/dL by default), §4c/§5d (Ca × P in mg²/dL² only from draws within
7 days of each other), §4d (CKD-EPI 2021 creatinine equation, exact coefficients, adults only; KDIGO G
categories) and product rules C1 (current values only) and C2 (total calcium used uncorrected, labelled
"uncorrected", when no albumin or ionized calcium is within 48 h).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from fhir_mappings.facts import DerivedValue, LabValue

__all__ = [
    "G_ORDER",
    "GCategory",
    "TimeIndex",
    "ca_x_p",
    "calcium_for_draw",
    "egfr_ckd_epi_2021",
    "kdigo_g_category",
    "nearest_within",
    "payne_corrected_calcium",
]

GCategory = Literal["G1", "G2", "G3a", "G3b", "G4", "G5"]
G_ORDER: tuple[GCategory, ...] = ("G1", "G2", "G3a", "G3b", "G4", "G5")


def egfr_ckd_epi_2021(creatinine_mg_dl: float, age_years: float, sex: Literal["female", "male"]) -> float:
    """eGFR in mL/min/1.73 m² by the race-free CKD-EPI 2021 creatinine equation (brief §4d), unrounded."""
    if creatinine_mg_dl <= 0:
        raise ValueError("creatinine must be positive")
    if age_years < 18:
        raise ValueError("CKD-EPI 2021 is valid from 18 years of age (brief §4d)")
    kappa, alpha = (0.7, -0.241) if sex == "female" else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    egfr = float(142 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age_years)
    return egfr * 1.012 if sex == "female" else egfr


def kdigo_g_category(egfr: float) -> GCategory:
    """KDIGO G category of an eGFR rounded to a whole number, as labs report it (brief §4d)."""
    whole = round(egfr)
    if whole >= 90:
        return "G1"
    if whole >= 60:
        return "G2"
    if whole >= 45:
        return "G3a"
    if whole >= 30:
        return "G3b"
    if whole >= 15:
        return "G4"
    return "G5"


def payne_corrected_calcium(calcium_mg_dl: float, albumin_g_dl: float) -> float:
    """Ca + 0.8 × (4.0 − albumin), conventional units (brief §4b)."""
    return calcium_mg_dl + 0.8 * (4.0 - albumin_g_dl)


class TimeIndex:
    """The pairable values of one series sorted by draw time, for repeated ``nearest_within`` lookups: a long
    record pairs every calcium with albumin and phosphate, and a scan per draw made that quadratic (issue 14)."""

    __slots__ = ("_entries", "_times")

    def __init__(self, candidates: Sequence[LabValue]) -> None:
        entries = sorted(
            ((c.effective, position, c) for position, c in enumerate(candidates)
             if c.effective is not None and c.value is not None and c.comparator is None),
            key=lambda entry: (entry[0], entry[1]),
        )
        self._entries = entries
        self._times = [entry[0] for entry in entries]

    def nearest(self, anchor: datetime, limit: timedelta) -> LabValue | None:
        """What the scan gives: the smallest gap, and of equal gaps the value listed first in the series."""
        times, count = self._times, len(self._times)
        at = bisect_left(times, anchor)
        gaps = [times[at] - anchor] if at < count else []
        if at > 0:
            gaps.append(anchor - times[at - 1])
        if not gaps or min(gaps) > limit:
            return None
        gap = min(gaps)
        tied = []
        for moment in {anchor - gap, anchor + gap}:
            tied.extend(self._entries[bisect_left(times, moment):bisect_right(times, moment)])
        return min(tied, key=lambda entry: entry[1])[2]


def nearest_within(anchor: LabValue, candidates: Sequence[LabValue] | TimeIndex, hours: float) -> LabValue | None:
    """The candidate drawn closest in time to ``anchor``, if within ``hours``; undated values never pair.
    Of equal gaps, the candidate listed first. ``candidates`` may be a ``TimeIndex`` built once for many anchors."""
    if anchor.effective is None:
        return None
    limit = timedelta(hours=hours)
    if isinstance(candidates, TimeIndex):
        return candidates.nearest(anchor.effective, limit)
    best: LabValue | None = None
    best_gap: timedelta | None = None
    for candidate in candidates:
        if candidate.effective is None or candidate.value is None or candidate.comparator is not None:
            continue
        gap = abs(candidate.effective - anchor.effective)
        if gap <= limit and (best_gap is None or gap < best_gap):
            best, best_gap = candidate, gap
    return best


def calcium_for_draw(
    calcium: LabValue,
    *,
    albumin: Sequence[LabValue] | TimeIndex,
    ionized: Sequence[LabValue] | TimeIndex,
    albumin_pairing_hours: float,
    correct_when_albumin_at_least_4: bool,
) -> DerivedValue | None:
    """The calcium value the rules read for one draw: lab-corrected, Payne-corrected, or C2 uncorrected."""
    if calcium.value is None or calcium.comparator is not None:
        return None
    if calcium.analyte == "calcium_corrected":
        return DerivedValue(
            "calcium_corrected",
            calcium.value,
            "mg/dL",
            "reported by the laboratory (LOINC 29265-6)",
            (calcium,),
            calcium.effective,
        )
    paired_albumin = nearest_within(calcium, albumin, albumin_pairing_hours)
    if paired_albumin is not None and paired_albumin.value is not None:
        if paired_albumin.value >= 4.0 and not correct_when_albumin_at_least_4:
            return DerivedValue(
                "calcium_corrected",
                calcium.value,
                "mg/dL",
                "measured total calcium; not corrected because albumin is at least 4.0 g/dL (brief §4b)",
                (calcium, paired_albumin),
                calcium.effective,
                ("albumin-at-least-4",),
            )
        return DerivedValue(
            "calcium_corrected",
            payne_corrected_calcium(calcium.value, paired_albumin.value),
            "mg/dL",
            "Payne: Ca + 0.8 × (4.0 − albumin g/dL)",
            (calcium, paired_albumin),
            calcium.effective,
        )
    paired_ionized = nearest_within(calcium, ionized, albumin_pairing_hours)
    if paired_ionized is not None:
        # §4b prefers the ionized value; the total stays on the total-calcium scale for the Ca × P product.
        return DerivedValue(
            "calcium_corrected",
            calcium.value,
            "mg/dL",
            "measured total calcium; ionized calcium drawn within 48 h is the preferred calcium status",
            (calcium, paired_ionized),
            calcium.effective,
            ("ionized-available",),
        )
    return DerivedValue(
        "calcium_corrected",
        calcium.value,
        "mg/dL",
        "measured total calcium, no albumin or ionized calcium within 48 h (rule C2)",
        (calcium,),
        calcium.effective,
        ("uncorrected",),
    )


def ca_x_p(calcium: DerivedValue, phosphate: LabValue) -> DerivedValue | None:
    """Calcium × phosphate in mg²/dL² from a calcium value and a phosphate already paired in time."""
    if phosphate.value is None:
        return None
    moments = [m for m in (calcium.effective, phosphate.effective) if m is not None]
    effective: datetime | None = max(moments) if moments else None
    return DerivedValue(
        "ca_x_p",
        calcium.value * phosphate.value,
        "mg2/dL2",
        f"calcium ({calcium.method}) × phosphate",
        (*calcium.inputs, phosphate),
        effective,
        calcium.flags,
    )
