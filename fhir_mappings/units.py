"""Unit conversion to one canonical unit per analyte.

Implements the clinical brief §4a (conversion factors) and §9.6 (French SI units; convert on the UCUM code in
``valueQuantity.code`` first, the display unit only as a fallback; accept ``umol/L`` and ``µmol/L``). A unit
that is not in the table for its analyte is reported as a :class:`DataIssue` and the value is not used: it is
never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from fhir_mappings.facts import DataIssue, Provenance

__all__ = [
    "KIT_UNIT_ANALYTES",
    "Converted",
    "canonical_unit",
    "conversion_factor",
    "from_canonical",
    "is_convertible",
    "normalise_unit",
    "to_canonical",
]

MG_DL: Final = "mg/dL"
MMOL_L: Final = "mmol/L"
PG_ML: Final = "pg/mL"
NG_ML: Final = "ng/mL"
U_L: Final = "U/L"
EGFR_UNIT: Final = "mL/min/{1.73_m2}"

# Factor that multiplies a value in the sent unit to give the canonical unit. The constants are the brief's
# §4a factors, applied in the direction the brief states them (mmol/L = mg/dL × 0.2495 is the inverse of
# mg/dL = mmol/L × 4.008; the brief gives both and the forward factor is used as written).
# Calcium is divalent: 1 mmol/L = 2 mEq/L (the same valence rule as the brief's magnesium row, §4a).
_CALCIUM = {MG_DL: 1.0, MMOL_L: 4.008, "meq/L": 4.008 / 2}
_WEIGHT = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237}
_TABLE: Final[dict[str, tuple[str, dict[str, float]]]] = {
    "calcium_total": (MG_DL, _CALCIUM),
    "calcium_corrected": (MG_DL, _CALCIUM),
    "calcium_ionized": (MG_DL, _CALCIUM),
    "phosphate": (MG_DL, {MG_DL: 1.0, MMOL_L: 3.097}),
    "creatinine": (MG_DL, {MG_DL: 1.0, "umol/L": 1 / 88.4}),
    "albumin": ("g/dL", {"g/dL": 1.0, "g/L": 1 / 10}),
    "pth_intact": (PG_ML, {PG_ML: 1.0, "ng/L": 1.0, "pmol/L": 1 / 0.106}),
    "vitd_25oh": (NG_ML, {NG_ML: 1.0, "nmol/L": 1 / 2.496}),
    "vitd_1_25": (PG_ML, {PG_ML: 1.0, "pmol/L": 1 / 2.6}),
    # mEq/L = mmol/L × 2 for a divalent ion, then mmol/L → mg/dL through the brief's 0.4114.
    "magnesium": (MG_DL, {MG_DL: 1.0, MMOL_L: 1 / 0.4114, "meq/L": 1 / (2 * 0.4114)}),
    "bicarbonate": (MMOL_L, {MMOL_L: 1.0, "meq/L": 1.0}),
    # An eGFR code sent in "mL/min" is read as per 1.73 m² (flagged: the code itself says indexed; issue 11).
    "egfr": (EGFR_UNIT, {EGFR_UNIT: 1.0, "mL/min": 1.0}),
    "crcl_cg": ("mL/min", {"mL/min": 1.0}),
    # Urea nitrogen and urea stay separate analytes (brief §1: "urea ≠ urea nitrogen"). Urea nitrogen in
    # mmol/L is the urea molar concentration, so the brief's "urea (mmol/L) = BUN (mg/dL) × 0.357" converts it.
    "urea_nitrogen": (MG_DL, {MG_DL: 1.0, MMOL_L: 1 / 0.357}),
    # Urea mg/dL → mmol/L from the brief's two BUN factors: × 0.357 / 2.14.
    "urea": (MMOL_L, {MMOL_L: 1.0, MG_DL: 0.357 / 2.14}),
    "alp": (U_L, {U_L: 1.0}),
    "ck": (U_L, {U_L: 1.0}),
    "aldolase": (U_L, {U_L: 1.0}),
    "ace": (U_L, {U_L: 1.0}),
    "hba1c": ("%", {"%": 1.0}),
    "bmi": ("kg/m2", {"kg/m2": 1.0}),
    "c3": (MG_DL, {MG_DL: 1.0, "g/L": 100.0}),
    "c4": (MG_DL, {MG_DL: 1.0, "g/L": 100.0}),
    "crp": ("mg/L", {"mg/L": 1.0, MG_DL: 10.0}),
    "dsdna": ("[IU]/mL", {"[IU]/mL": 1.0}),
    # Safety addendum S36 (G-BODY): convert on the UCUM code: kg, g, [lb_av]; cm, m, [in_i].
    "body_weight": ("kg", _WEIGHT),
    "body_weight_stated": ("kg", _WEIGHT),
    "dry_weight": ("kg", _WEIGHT),
    "body_height": ("cm", {"cm": 1.0, "m": 100.0, "[in_i]": 2.54}),
}

# Antibody results are kit-specific (brief §1, §4e): a numeric value keeps the unit the lab sent and is judged
# against the lab's own range or interpretation, never converted.
KIT_UNIT_ANALYTES: Final = frozenset({"ana", "sm", "centromere", "scl70", "rnapol3", "jo1", "nxp2", "mda5", "tif1g"})

# Spellings EHRs send for the same UCUM unit. Keys are lower-case with the micro sign folded to "u".
_SPELLINGS: Final[dict[str, str]] = {
    "mg/dl": MG_DL,
    "mmol/l": MMOL_L,
    "umol/l": "umol/L",
    "g/dl": "g/dL",
    "g/l": "g/L",
    "pg/ml": PG_ML,
    "ng/l": "ng/L",
    "pmol/l": "pmol/L",
    "ng/ml": NG_ML,
    "nmol/l": "nmol/L",
    "[iu]/ml": "[IU]/mL",
    "iu/ml": "[IU]/mL",
    "u/l": U_L,
    "ml/min/{1.73_m2}": EGFR_UNIT,
    "ml/min": "mL/min",
    # International units and enzyme units are reported interchangeably for enzyme activity (ALP, CK...).
    "[iu]/l": U_L,
    "iu/l": U_L,
    "ui/l": U_L,
    "meq/l": "meq/L",
    "%": "%",
    "kg/m2": "kg/m2",
    "kg": "kg",
    "g": "g",
    "[lb_av]": "[lb_av]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "cm": "cm",
    "m": "m",
    "[in_i]": "[in_i]",
    "in": "[in_i]",
    "mg/l": "mg/L",
}


@dataclass(frozen=True, slots=True)
class Converted:
    value: float
    unit: str
    # The normalised unit the value arrived in, e.g. "mmol/L".
    source_unit: str


# Per-1.73 m² spellings labs send for eGFR: "mL/min/1.73m2", "mL/min/1.73.m2", "ml/min/1,73 m²" (issue 11).
_PER_BSA = re.compile(r"^ml/min/\{?1[.,]73[ ._]?m(?:2|²|\^2)\}?$")


@lru_cache(maxsize=1024)
def normalise_unit(unit: str | None) -> str | None:
    """The project spelling of a UCUM unit ("µmol/L" -> "umol/L", "mEq/L" -> "meq/L"), None if unknown."""
    if unit is None:
        return None
    key = unit.strip().replace("µ", "u").replace("μ", "u").lower()
    spelled = _SPELLINGS.get(key)
    if spelled is None and _PER_BSA.match(key.replace(" ", "")):
        return EGFR_UNIT
    return spelled


def canonical_unit(analyte: str) -> str | None:
    entry = _TABLE.get(analyte)
    return entry[0] if entry else None


def is_convertible(analyte: str, unit: str | None) -> bool:
    entry = _TABLE.get(analyte)
    normalised = normalise_unit(unit)
    return entry is not None and normalised is not None and normalised in entry[1]


@lru_cache(maxsize=2048)
def conversion_factor(analyte: str, code: str | None, unit: str | None) -> tuple[float, str, str] | None:
    """(factor, canonical unit, source unit) for the first of ``code``, ``unit`` the table knows."""
    entry = _TABLE.get(analyte)
    if entry is None:
        return None
    canonical, factors = entry
    for candidate in (code, unit):
        normalised = normalise_unit(candidate)
        if normalised is not None and normalised in factors:
            return factors[normalised], canonical, normalised
    return None


def to_canonical(
    analyte: str,
    value: float,
    *,
    code: str | None,
    unit: str | None,
    provenance: Provenance | None = None,
) -> Converted | DataIssue:
    """Convert ``value`` to the analyte's canonical unit: UCUM ``code`` first, display ``unit`` as fallback."""
    if analyte in KIT_UNIT_ANALYTES:
        sent = (code or unit or "").strip()
        return Converted(value, sent, sent)
    found = conversion_factor(analyte, code, unit)
    if found is not None:
        factor, canonical, source = found
        return Converted(value * factor, canonical, source)
    entry = _TABLE.get(analyte)
    if entry is None:
        return DataIssue("unknown-analyte", f"no unit table for analyte {analyte!r}", provenance)
    canonical = entry[0]
    if code is None and unit is None:
        return DataIssue("missing-unit", f"{analyte} value {value:g} has no unit; not used", provenance)
    return DataIssue(
        "unknown-unit",
        f"{analyte} value {value:g} in unit {code or unit!r} cannot be converted to {canonical}; not used",
        provenance,
    )


def from_canonical(analyte: str, value: float, unit: str) -> float:
    """Inverse of :func:`to_canonical` (used for display in the unit a lab prefers, and in tests)."""
    if analyte in KIT_UNIT_ANALYTES:
        return value
    _, factors = _TABLE[analyte]
    normalised = normalise_unit(unit)
    if normalised is None or normalised not in factors:
        raise ValueError(f"{unit!r} is not a unit of {analyte}")
    return value / factors[normalised]
