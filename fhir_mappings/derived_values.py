"""Values computed from several results: corrected calcium, Ca x P, CKD-EPI 2021 eGFR, Cockcroft-Gault CrCl.

Implements the clinical brief §4b-§4d with rules C1, C2 and C6, and the safety addendum S36 (Cockcroft-Gault
creatinine clearance, with body weight from G-BODY, where a rule's threshold is written as CrCl). Each value
keeps the results it used, so the card can show them; nothing is computed from an input the knowledge does
not verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from fhir_mappings.derived import TimeIndex, ca_x_p, calcium_for_draw, egfr_ckd_epi_2021, nearest_within
from fhir_mappings.facts import AnalyteSeries, CkdStage, DataIssue, DerivedValue, LabValue
from fhir_mappings.options import MappingOptions

__all__ = ["cockcroft_gault", "compute_derived", "current_values", "lookback_days"]

Sex = Literal["female", "male", "other", "unknown"]
_NEVER: Final = datetime.min.replace(tzinfo=UTC)
_WEIGHTS: Final = ("body_weight", "body_weight_stated")


def lookback_days(analyte: str, options: MappingOptions, serology: frozenset[str]) -> int:
    if analyte in serology:
        return options.serology_lookback_days
    if analyte in (*_WEIGHTS, "dry_weight"):
        return options.weight_lookback_days
    if analyte == "body_height":
        return options.height_lookback_days
    return options.chemistry_lookback_days


def current_values(series: Mapping[str, AnalyteSeries], analyte: str, now: datetime, days: int) -> list[LabValue]:
    """Dated, numeric values of ``analyte`` inside the look-back window, newest first (rule C1)."""
    found = series.get(analyte)
    if found is None:
        return []
    start = now - timedelta(days=days)
    return [
        v
        for v in found.history
        if v.effective is not None
        and v.value is not None
        and v.comparator is None
        and start <= v.effective
        and v.effective <= now + timedelta(days=1)
    ]


def compute_derived(
    series: Mapping[str, AnalyteSeries],
    now: datetime,
    age: float | None,
    sex: Sex,
    options: MappingOptions,
    issues: list[DataIssue],
) -> dict[str, DerivedValue]:
    days = options.chemistry_lookback_days
    totals = current_values(series, "calcium_total", now, days)
    reported_corrected = current_values(series, "calcium_corrected", now, days)
    albumin = TimeIndex(series["albumin"].history if "albumin" in series else ())
    ionized = TimeIndex(series["calcium_ionized"].history if "calcium_ionized" in series else ())
    phosphate = TimeIndex(current_values(series, "phosphate", now, days))

    def calcium_of(value: LabValue) -> DerivedValue | None:
        return calcium_for_draw(
            value,
            albumin=albumin,
            ionized=ionized,
            albumin_pairing_hours=options.albumin_pairing_hours,
            correct_when_albumin_at_least_4=options.correct_calcium_when_albumin_at_least_4,
        )

    derived: dict[str, DerivedValue] = {}
    candidates = sorted([*totals, *reported_corrected], key=_when, reverse=True)
    if candidates and (calcium := calcium_of(candidates[0])) is not None:
        derived["calcium_corrected"] = calcium
    for candidate in candidates:
        paired = nearest_within(candidate, phosphate, options.ca_p_pairing_hours)
        calcium = calcium_of(candidate) if paired is not None else None
        if paired is not None and calcium is not None and (product := ca_x_p(calcium, paired)) is not None:
            derived["ca_x_p"] = product
            break
    egfr = _egfr(series, now, age, sex, days, issues)
    if egfr is not None:
        derived["egfr_ckd_epi_2021"] = egfr
    return derived


def _when(value: LabValue) -> datetime:
    return value.effective or _NEVER


def _egfr(
    series: Mapping[str, AnalyteSeries],
    now: datetime,
    age: float | None,
    sex: Sex,
    days: int,
    issues: list[DataIssue],
) -> DerivedValue | None:
    """CKD-EPI 2021 from the latest current creatinine, only when no current eGFR was reported (§4d)."""
    reported = series.get("egfr")
    if reported is not None and reported.latest is not None:
        return None
    creatinine = current_values(series, "creatinine", now, days)
    if not creatinine:
        return None
    if age is None or age < 18 or sex not in {"female", "male"}:
        why = "age under 18 (CKD-EPI 2021 is for adults)" if age is not None and age < 18 else "age or sex unknown"
        issues.append(DataIssue("egfr-not-computed", f"eGFR not computed from creatinine: {why}"))
        return None
    latest = creatinine[0]
    value = egfr_ckd_epi_2021(latest.value or 0.0, age, "female" if sex == "female" else "male")
    return DerivedValue(
        "egfr_ckd_epi_2021",
        value,
        "mL/min/{1.73_m2}",
        "CKD-EPI 2021 creatinine equation (race-free)",
        (latest,),
        latest.effective,
    )


def _latest_current(series: Mapping[str, AnalyteSeries], analyte: str) -> LabValue | None:
    found = series.get(analyte)
    latest = found.latest if found else None
    return latest if latest is not None and latest.value is not None and latest.comparator is None else None


def cockcroft_gault(
    series: Mapping[str, AnalyteSeries], age: float | None, sex: Sex, ckd: CkdStage | None
) -> DerivedValue | None:
    """Cockcroft-Gault CrCl (mL/min) for rules whose label threshold is written as CrCl (S1, S8/S22; S36).

    CrCl = (140 - age) x weight (kg) / (72 x creatinine mg/dL), x 0.85 if female (the formula as printed in
    the colchicine label, clinical brief §9.1 S1). Weight: measured (29463-7, 3141-9) within the weight window,
    else stated (3142-7); on dialysis the dry weight (8341-0) first. Adults with a known sex only, and only
    when the lab did not report a CrCl itself (35591-7 is then read as is).
    """
    if _latest_current(series, "crcl_cg") is not None:
        return None
    if age is None or age < 18 or sex not in {"female", "male"}:
        return None
    creatinine = _latest_current(series, "creatinine")
    order = ("dry_weight", *_WEIGHTS) if ckd is not None and ckd.dialysis else _WEIGHTS
    weight = next((w for analyte in order if (w := _latest_current(series, analyte)) is not None), None)
    if creatinine is None or weight is None or not creatinine.value or not weight.value:
        return None
    value = (140 - age) * weight.value / (72 * creatinine.value) * (0.85 if sex == "female" else 1.0)
    return DerivedValue(
        "crcl_cockcroft_gault",
        value,
        "mL/min",
        "Cockcroft-Gault creatinine clearance",
        (creatinine, weight),
        max((v.effective for v in (creatinine, weight) if v.effective), default=None),
    )
