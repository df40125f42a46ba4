"""Small helpers shared by the extraction modules: FHIR dates, codings and provenance.

FHIR R4 ``dateTime`` may be a year, a year-month, a date or a full timestamp with offset (FHIR R4 datatypes,
dateTime). Every parsed value is made timezone-aware (UTC when the source gives no offset) so that it can be
compared with the ``now`` the caller passes in (facts contract: nothing here reads the clock).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from functools import lru_cache

from fhir_mappings.facts import Provenance
from fhir_mappings.models import Annotation, CodeableConcept, Coding, Period
from fhir_mappings.terminology import ConceptMatch, lookup

__all__ = [
    "aware",
    "codings",
    "first_code",
    "match_codings",
    "notes_text",
    "parse_date",
    "parse_datetime",
    "period_start",
    "provenance_for",
]

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@lru_cache(maxsize=16384)
def parse_datetime(value: str | None) -> datetime | None:
    """A FHIR dateTime/instant/date as an aware datetime (partial dates: first day), None if unreadable."""
    if not value:
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        pass
    partial = _PARTIAL.match(value.strip())
    if partial is None:
        return None
    year, month = partial.groups()
    try:
        return datetime(int(year), int(month or 1), 1, tzinfo=UTC)
    except ValueError:
        return None


def parse_date(value: str | None) -> tuple[date | None, bool]:
    """A FHIR date; the flag is True when only a year or year-month was given."""
    if not value:
        return None, False
    try:
        return date.fromisoformat(value), False
    except ValueError:
        moment = parse_datetime(value)
        return (moment.date(), True) if moment else (None, False)


def period_start(period: Period | None) -> datetime | None:
    if not period:
        return None
    return parse_datetime(period.get("start")) or parse_datetime(period.get("end"))


def codings(concept: CodeableConcept | None) -> list[Coding]:
    return concept.get("coding", []) if concept else []


def first_code(concept: CodeableConcept | None) -> str | None:
    return next((c["code"] for c in codings(concept) if c.get("code")), None)


def notes_text(notes: Iterable[Annotation]) -> str:
    return "\n".join(text for note in notes if (text := note.get("text")))


def match_codings(items: Iterable[Coding]) -> list[tuple[Coding, ConceptMatch]]:
    """Every coding that maps to a concept, in the order sent."""
    found = []
    for coding in items:
        match = lookup(coding.get("system"), coding.get("code"))
        if match is not None:
            found.append((coding, match))
    return found


def provenance_for(
    resource_type: str,
    resource_id: str | None,
    coding: Coding | None = None,
    match: ConceptMatch | None = None,
    original: str | None = None,
) -> Provenance:
    sent_display = coding.get("display") if coding else None
    return Provenance(
        resource_type=resource_type,
        resource_id=resource_id,
        system=match.system_uri if match else (coding.get("system") if coding else None),
        code=match.code if match else (coding.get("code") if coding else None),
        display=sent_display or (match.display if match else None),
        original=original,
        unverified_code=bool(match and match.unverified),
    )
