"""Issue 14: pairing through a ``TimeIndex`` gives exactly what the scan of the whole series gave (the same value,
ties to the value listed first), so long records pair in log time without a single derived value changing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fhir_mappings.derived import TimeIndex, nearest_within
from fhir_mappings.facts import LabValue, Provenance

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _value(position: int, hours: int | None, dropped: int) -> LabValue:
    return LabValue(
        analyte="phosphate", value=None if dropped == 1 else float(position), unit="mg/dL",
        effective=None if hours is None else T0 + timedelta(hours=hours),
        provenance=Provenance("Observation", f"o{position}"), comparator="<" if dropped == 2 else None,
    )


series = st.lists(st.tuples(st.one_of(st.none(), st.integers(-200, 200)), st.integers(0, 6)), max_size=40)


@given(series, st.integers(-250, 250), st.sampled_from([0.0, 1.0, 24.0, 48.0, 1000.0]))
def test_the_index_pairs_as_the_scan_does(values: list[tuple[int | None, int]], anchor_hours: int,
                                          window: float) -> None:
    candidates = [_value(i, hours, dropped) for i, (hours, dropped) in enumerate(values)]
    anchor = _value(-1, anchor_hours, 0)
    assert nearest_within(anchor, TimeIndex(candidates), window) is nearest_within(anchor, candidates, window)


def test_of_equal_gaps_the_value_listed_first_pairs() -> None:
    after, before = _value(0, 5, 0), _value(1, -5, 0)
    assert nearest_within(_value(-1, 0, 0), TimeIndex([after, before]), 24) is after
    assert nearest_within(_value(-1, 0, 0), TimeIndex([before, after]), 24) is before
