"""The bench's request bodies as of today.

The served service reads the real clock, but the fixtures were written against a fixed one (the tests'
``tests.fhir_builders.NOW``, or ``bench_facts.NOW``). Left as they are, their results fall out of the look-back
windows month by month and the bench measures another path (a record of history only). Every date in a body
moves by the same whole number of days, so a result 3 days old stays 3 days old and an age stays an age.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import orjson

__all__ = ["as_of"]

# A FHIR date, dateTime or instant: the date part first, then (maybe) the time and the offset, kept as sent.
_DATED = re.compile(r"(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?")


def as_of(body: bytes, written_at: datetime, now: datetime) -> bytes:
    """``body`` with every date moved by the days between ``written_at`` (the fixture's clock) and ``now``."""
    days = (now.date() - written_at.date()).days
    return orjson.dumps(_moved(orjson.loads(body), timedelta(days=days))) if days else body


def _moved(value: Any, shift: timedelta) -> Any:
    if isinstance(value, dict):
        return {key: _moved(item, shift) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, shift) for item in value]
    if isinstance(value, str) and (match := _DATED.fullmatch(value)):
        try:
            day = date.fromisoformat(match.group(1))
        except ValueError:
            return value
        return (day + shift).isoformat() + (match.group(2) or "")
    return value
