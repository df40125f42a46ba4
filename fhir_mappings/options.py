"""How the mapping layer reads a record: look-back windows, pairing windows and text languages."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MappingOptions"]


@dataclass(frozen=True, slots=True)
class MappingOptions:
    # Brief §5b and rule C1: values inside the window are "current"; older ones are history only.
    chemistry_lookback_days: int = 90
    serology_lookback_days: int = 365
    # Safety addendum G-BODY: the latest weight within 30 days (product decision). Height changes little in
    # adults: a height from the last 5 years is used (product decision); children need a recent one.
    weight_lookback_days: int = 30
    height_lookback_days: int = 5 * 365
    # Brief §5d: Ca × P only from draws within 7 days of each other.
    ca_p_pairing_hours: float = 168.0
    # Brief §4b and rule C2: albumin (or ionized calcium) within 48 h of the calcium.
    albumin_pairing_hours: float = 48.0
    # Brief §4b leaves correction at albumin ≥ 4.0 g/dL to configuration; default: do not correct.
    correct_calcium_when_albumin_at_least_4: bool = False
    # Languages of the name lists used for medications and body sites.
    locale_text_matching: tuple[str, ...] = ("en", "fr")
