"""Laboratory Observations to :class:`LabValue` and per-analyte series.

Implements the clinical brief §1 (LOINC analyte groups; qualitative antibody results as coded value,
"Negative"/"Positive" string or titer "1:160"; prefer ``interpretation`` or ``referenceRange``), §4a/§9.6
(units, via :mod:`fhir_mappings.units`), §4e with rule C3 (default ranges, via :mod:`fhir_mappings.ranges`),
§5b and rule C1 (look-back windows: only values inside the window are "latest"; older ones are history) and
the eGFR preference of §1 (98979-8 first among current reported values).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from fhir_mappings._common import first_code, parse_datetime, period_start, provenance_for
from fhir_mappings.facts import AnalyteSeries, DataIssue, LabValue, Provenance, Qualitative, ReferenceRange
from fhir_mappings.models import (
    CodeableConcept,
    Coding,
    Observation,
    ObservationComponent,
    Quantity,
    ReferenceRangeElement,
)
from fhir_mappings.ranges import default_range, no_default_for_age, qualitative_from_band
from fhir_mappings.terminology import ConceptMatch, fold_text
from fhir_mappings.units import KIT_UNIT_ANALYTES, Converted, conversion_factor, normalise_unit, to_canonical
from fhir_mappings.values import finite_number, implausible

# What a value is read from: a whole Observation, or one component of a panel.
Reading = Observation | ObservationComponent

__all__ = ["LabContext", "build_series", "effective_of", "lab_value"]

Comparator = Literal["<", "<=", ">", ">="]
_COMPARATORS: Final[dict[str, Comparator]] = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "≤": "<=", "≥": ">="}
_IGNORED_STATUS: Final = frozenset({"entered-in-error", "cancelled"})
_FINAL_STATUS: Final = frozenset({"final", "amended", "corrected"})
_NUMERIC_STRING: Final = re.compile(r"^\s*(<=|>=|≤|≥|<|>)?\s*([-+]?\d+(?:[.,]\d+)?)\s*(\S.*)?$")
_TITER: Final = re.compile(r"(?<![\d.])1\s*[:/]\s*(\d+)\b")
_QUALITATIVE_WORDS: Final[tuple[tuple[str, Qualitative], ...]] = (
    ("not detected", "negative"),
    ("non detecte", "negative"),
    ("negative", "negative"),
    ("negatif", "negative"),
    ("equivocal", "equivocal"),
    ("borderline", "equivocal"),
    ("douteux", "equivocal"),
    ("indetermine", "equivocal"),
    ("positive", "positive"),
    ("positif", "positive"),
    ("detected", "positive"),
    ("detecte", "positive"),
)
_EGFR_PREFERRED: Final = "98979-8"
# A value dated a little after ``now`` (clock skew between EHR and service) still counts as current.
_FUTURE_SKEW: Final = timedelta(days=1)
_NEVER: Final = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LabContext:
    age_years: float | None
    sex: str


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _qualitative_from_text(text: str | None) -> Qualitative | None:
    if not text:
        return None
    folded = f" {fold_text(text)} "
    for word, result in _QUALITATIVE_WORDS:
        if f" {word} " in folded:
            return result
    return None


def _interpretation(observation: Reading) -> str | None:
    for concept in observation.get("interpretation", ()):
        for coding in concept.get("coding", ()):
            code = coding.get("code")
            if code:
                return code
    return None


_RANGE_CACHE: dict[tuple[object, ...], ReferenceRange | None] = {}


def _bound(analyte: str, quantity: Quantity | None, fallback_unit: str | None) -> float | None:
    value = finite_number(quantity.get("value")) if quantity else None
    if quantity is None or value is None:
        return None
    code, unit = quantity.get("code"), quantity.get("unit")
    converted = to_canonical(analyte, value, code=code, unit=unit or (None if code else fallback_unit))
    return converted.value if isinstance(converted, Converted) else None


def _lab_range(analyte: str, element: ReferenceRangeElement | None, sent_unit: str | None) -> ReferenceRange | None:
    """The lab's own range converted to the canonical unit; None when absent or not convertible."""
    if not element:
        return None
    low, high = element.get("low"), element.get("high")
    if not low and not high:
        return None
    # Labs repeat the same range on every result: caching keeps the cost to one dict hit per Observation.
    key = (
        analyte,
        sent_unit,
        tuple((k, repr(v)) for k, v in low.items()) if low else None,
        tuple((k, repr(v)) for k, v in high.items()) if high else None,
    )
    if key in _RANGE_CACHE:
        return _RANGE_CACHE[key]
    low_value = _bound(analyte, low, sent_unit)
    high_value = _bound(analyte, high, sent_unit)
    result = None if low_value is None and high_value is None else ReferenceRange(low_value, high_value, "observation")
    if len(_RANGE_CACHE) < 4096:
        _RANGE_CACHE[key] = result
    return result


def _range_unit(element: ReferenceRangeElement | None) -> str | None:
    if not element:
        return None
    for quantity in (element.get("low"), element.get("high")):
        if quantity and (quantity.get("code") or quantity.get("unit")):
            return quantity.get("code") or quantity.get("unit")
    return None


@dataclass(slots=True)
class _Raw:
    """What the Observation says before unit conversion."""

    value: float | None = None
    comparator: Comparator | None = None
    qualitative: Qualitative | None = None
    code: str | None = None
    unit: str | None = None
    original: str | None = None
    flags: tuple[str, ...] = ()


def _read_string(analyte: str, text: str, range_element: ReferenceRangeElement | None) -> _Raw:
    raw = _Raw(original=text, flags=("value-string",), qualitative=_qualitative_from_text(text))
    titer = _TITER.search(text)
    if titer is not None:
        raw.value, raw.unit = float(titer.group(1)), "{titer}"
        return raw
    numeric = _NUMERIC_STRING.match(text)
    if numeric is None:
        return raw
    comparator, number, trailing = numeric.groups()
    raw.value = float(number.replace(",", "."))
    if comparator:
        raw.comparator = _COMPARATORS[comparator]
        raw.flags += ("comparator",)
    if trailing:
        raw.unit = trailing.strip()
    elif analyte not in KIT_UNIT_ANALYTES:
        # A bare number carries no unit; the lab's own range on the same Observation is the only non-guess.
        raw.unit = _range_unit(range_element)
        if raw.unit is not None:
            raw.flags += ("unit-from-reference-range",)
    return raw


def _read_coded(concept: CodeableConcept) -> _Raw:
    items = concept.get("coding", [])
    texts = [concept.get("text"), *(c.get("display") for c in items), *(c.get("code") for c in items)]
    qualitative = next((q for q in map(_qualitative_from_text, texts) if q is not None), None)
    shown = concept.get("text") or next((d for c in items if (d := c.get("display"))), None)
    return _Raw(qualitative=qualitative, original=shown)


class _NotANumber(Exception):
    """A value position holds something that is not a finite JSON number."""

    def __init__(self, sent: object) -> None:
        super().__init__(sent)
        self.shown = repr(sent)[:24]


def _read_value(analyte: str, obs: Reading, range_element: ReferenceRangeElement | None) -> _Raw | None:
    quantity = obs.get("valueQuantity")
    sent = quantity.get("value") if quantity else None
    if quantity and sent is not None:
        value = finite_number(sent)
        if value is None:
            raise _NotANumber(sent)
        comparator = _COMPARATORS.get(quantity.get("comparator") or "")
        code, unit = quantity.get("code"), quantity.get("unit")
        return _Raw(
            value=value,
            comparator=comparator,
            code=code,
            unit=unit,
            original=f"{comparator or ''}{value} {code or unit or ''}".rstrip(),
            flags=("comparator",) if comparator else (),
        )
    text = obs.get("valueString")
    if text and text.strip():
        return _read_string(analyte, text.strip(), range_element)
    coded = obs.get("valueCodeableConcept")
    if coded:
        return _read_coded(coded)
    integer = obs.get("valueInteger")
    if integer is not None:
        if isinstance(integer, bool) or not isinstance(integer, int):
            raise _NotANumber(integer)
        return _read_string(analyte, str(integer), range_element)
    ratio = obs.get("valueRatio")
    numerator = finite_number((ratio.get("numerator") or {}).get("value")) if ratio else None
    denominator = finite_number((ratio.get("denominator") or {}).get("value")) if ratio else None
    if numerator == 1 and denominator:
        return _Raw(value=denominator, unit="{titer}", original=f"1:{_num(denominator)}")
    return None


def effective_of(obs: Observation) -> tuple[datetime | None, bool]:
    """When the result was taken: effective[x], else ``issued`` (the report time; flagged); True if issued."""
    effective = parse_datetime(obs.get("effectiveDateTime") or obs.get("effectiveInstant")) or period_start(
        obs.get("effectivePeriod")
    )
    if effective is not None:
        return effective, False
    issued = parse_datetime(obs.get("issued"))
    return issued, issued is not None


def lab_value(
    obs: Observation,
    coding: Coding,
    match: ConceptMatch,
    context: LabContext,
    reading: ObservationComponent | None = None,
) -> LabValue | DataIssue | None:
    """One usable LabValue, a DataIssue saying why the Observation is not used, or None when it is ignored.

    ``reading``: a component of the panel ``obs`` (its code, value and range); status and date are the panel's.
    """
    status = obs.get("status") or "unknown"
    if status in _IGNORED_STATUS:
        return None
    analyte = match.concept_id
    resource_id = obs.get("id")
    source: Reading = reading if reading is not None else obs
    absent = source.get("dataAbsentReason")
    if absent is not None:
        reason = absent.get("text") or first_code(absent) or "unknown"
        return DataIssue(
            "data-absent", f"{analyte}: no value ({reason})", provenance_for("Observation", resource_id, coding, match)
        )
    ranges = source.get("referenceRange")
    range_element = ranges[0] if ranges else None
    try:
        raw = _read_value(analyte, source, range_element)
    except _NotANumber as exc:
        return DataIssue(
            "unusable-value",
            f"{analyte}: value {exc.shown} is not a finite number; not used",
            provenance_for("Observation", resource_id, coding, match),
        )
    if raw is None or (raw.value is None and raw.qualitative is None):
        return DataIssue(
            "no-value", f"{analyte}: no readable value", provenance_for("Observation", resource_id, coding, match)
        )
    # Built inline rather than through provenance_for: this line runs once per laboratory result.
    provenance = Provenance(
        "Observation",
        resource_id,
        match.system_uri,
        match.code,
        coding.get("display") or match.display,
        raw.original,
        match.unverified,
    )
    value, unit, flags = raw.value, "", raw.flags
    if raw.value is not None:
        found = conversion_factor(analyte, raw.code, raw.unit)
        if raw.unit == "{titer}":
            unit = "{titer}"
        elif found is not None:
            value, unit = raw.value * found[0], found[1]
        elif analyte in KIT_UNIT_ANALYTES:
            unit = (raw.code or raw.unit or "").strip()
            flags += ("kit-units",)
        else:
            issue = to_canonical(analyte, raw.value, code=raw.code, unit=raw.unit, provenance=provenance)
            if raw.qualitative is None and isinstance(issue, DataIssue):
                return issue
            value = None
    if value is not None and implausible(analyte, value):
        return DataIssue(
            "unusable-value",
            f"{analyte}: {raw.original or value} is outside the plausible range; not used",
            provenance,
        )
    if analyte == "egfr" and normalise_unit(raw.code or raw.unit) == "mL/min":
        flags += ("unit-read-as-per-1.73m2",)
    if reading is not None:
        flags += ("panel-component",)
    effective, by_issued = effective_of(obs)
    if effective is None:
        flags += ("no-effective-date",)
    elif by_issued:
        flags += ("dated-by-issued",)
    if status == "preliminary":
        flags += ("preliminary",)
    elif status not in _FINAL_STATUS:
        flags += (f"status-{status}",)
    interpretation = _interpretation(source)
    reference = _lab_range(analyte, range_element, raw.code or raw.unit) if value is not None else None
    if reference is None and unit and analyte not in KIT_UNIT_ANALYTES:
        reference = default_range(analyte, context.age_years, context.sex)
        if reference is None and value is not None and no_default_for_age(analyte, context.age_years, context.sex):
            # An adolescent's phosphate with no lab range is not judged (no adult range applied): say so.
            flags += ("no-range-for-age",)
    qualitative = raw.qualitative
    # §4e bands decide only when the lab said nothing itself; an ANA titer has no lab range to say it with.
    lab_silent = interpretation is None and (reference is None or unit == "{titer}")
    if qualitative is None and value is not None and lab_silent:
        qualitative = qualitative_from_band(analyte, value, unit)
    return LabValue(
        analyte,
        value,
        unit,
        effective,
        provenance,
        raw.comparator,
        qualitative,
        interpretation,
        reference,
        status,
        flags,
    )


def _newest_first(values: Sequence[LabValue]) -> tuple[LabValue, ...]:
    dated = sorted((v for v in values if v.effective is not None), key=_sort_key, reverse=True)
    return (*dated, *(v for v in values if v.effective is None))


def _sort_key(value: LabValue) -> datetime:
    return value.effective or _NEVER


def build_series(analyte: str, values: Sequence[LabValue], *, now: datetime, lookback_days: int) -> AnalyteSeries:
    """Latest usable value inside the look-back window (rule C1) and the full history, newest first."""
    history = _newest_first(values)
    start, end = now - timedelta(days=lookback_days), now + _FUTURE_SKEW
    current = [
        v
        for v in history
        if v.effective is not None and start <= v.effective <= end and (v.value is not None or v.qualitative)
    ]
    latest = current[0] if current else None
    if analyte == "egfr":
        preferred = next((v for v in current if v.provenance.code == _EGFR_PREFERRED), None)
        latest = preferred or latest
    return AnalyteSeries(analyte, latest, history, start)
