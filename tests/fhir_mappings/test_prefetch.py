"""The completeness rule's reading of a page (issue 11): newest first, and reaching past the look-back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_mappings.prefetch import newest_first_reach

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
YEAR_AGO = NOW - timedelta(days=365)


def taken(days_ago: float, element: str = "effectiveDateTime") -> dict[str, Any]:
    moment = (NOW - timedelta(days=days_ago)).isoformat()
    value: Any = {"start": moment} if element == "effectivePeriod" else moment
    return {"resourceType": "Observation", "id": f"o{days_ago}", element: value}


@pytest.mark.parametrize(("page", "reach"), [
    ([taken(1), taken(100), taken(400)], 400),  # newest first, past the year: complete
    ([taken(1), taken(100), taken(300)], None),  # newest first, still inside the year
    ([taken(400), taken(1)], None),  # oldest first (the server ignored _sort): proves nothing
    ([taken(1), taken(1), taken(366)], 366),  # equal dates keep the order newest first
    ([taken(1), {"resourceType": "Observation"}, taken(500)], 500),  # an undated result is ignored
    ([taken(2, "issued"), taken(200, "effectivePeriod"), taken(370, "effectiveInstant")], 370),
    ([{"resourceType": "Observation", "effectiveDateTime": "not a date"}], None),
    ([], None),
])
def test_newest_first_reach(page: list[dict[str, Any]], reach: int | None) -> None:
    found = newest_first_reach(page, YEAR_AGO)
    assert found == (None if reach is None else NOW - timedelta(days=reach))
