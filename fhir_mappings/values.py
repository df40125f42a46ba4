"""Numbers as FHIR sends them: finite JSON numbers, within what a human body can hold.

FHIR's ``decimal`` and ``integer`` are JSON numbers. A string ("10.9"), a boolean, NaN, ±Infinity (which some
JSON writers emit as strings) or a nested object in a value position is not a reading: the reader reports it
as an unusable value, never coerces it, and never lets it reach a rule (issue 16). A finite number outside the
plausible range of its analyte (``tables/plausible_ranges.csv``, data plausibility limits far outside any
clinical threshold) is a data error too, so "1e308 mg/dL" never prints as a reading.
"""

from __future__ import annotations

import csv
import io
import math
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["finite_number", "implausible", "plausible_range"]


def finite_number(value: Any) -> float | None:
    """The value as a float when it is a finite JSON number (int or float, not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@lru_cache(maxsize=1)
def _ranges() -> dict[str, tuple[float, float]]:
    raw = resources.files("fhir_mappings").joinpath("tables", "plausible_ranges.csv").read_text(encoding="utf-8")
    return {row["analyte"]: (float(row["low"]), float(row["high"])) for row in csv.DictReader(io.StringIO(raw))}


def plausible_range(analyte: str) -> tuple[float, float] | None:
    """(low, high) in the analyte's canonical unit, None when the table has no row for it."""
    return _ranges().get(analyte)


def implausible(analyte: str, canonical_value: float) -> bool:
    bounds = _ranges().get(analyte)
    return bounds is not None and not (bounds[0] <= canonical_value <= bounds[1])
