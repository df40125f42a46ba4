"""Records to stored rows and back (security brief §3.3 content, §3.4 storage).

A row is a handful of indexed columns (time, patient, service, hookInstance, status, caller, card uuid)
plus the canonical JSON of the whole record, so every field stays queryable and exportable, and a
stored document reads back into the exact dataclass that was written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from hooks.audit.chain import canonical_document, canonical_json
from hooks.audit.records import FeedbackRecord, FhirQuery, HookCallRecord, PrefetchKeyState

__all__ = [
    "MAX_COLUMN_CHARS",
    "FeedbackLink",
    "RowKind",
    "access_row",
    "call_document",
    "call_from_document",
    "call_row",
    "column_text",
    "feedback_dedupe_key",
    "feedback_from_document",
    "feedback_row",
    "parse_time",
    "utc_iso",
]

RowKind = Literal["call", "feedback", "access"]
# How a feedback item joined its card: "other-caller" is a card another iss/tenant was shown (OWASP API1).
FeedbackLink = Literal["linked", "unknown-card", "other-caller"]


def utc_iso(moment: datetime) -> str:
    """One fixed-width UTC format, so text comparison of ``occurred_at`` is time order on both backends."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# An indexed column holds at most this many characters (4 bytes each at most: far under PostgreSQL's
# ~2,700-byte B-tree entry limit); longer values keep a prefix and a digest of the whole value.
MAX_COLUMN_CHARS = 512
_DIGEST_CHARS = 16
_DIGEST_MARK = "#sha256:"


def column_text(value: object) -> str | None:
    """The text stored in an indexed column: what any request can put there must not stop its record.

    PostgreSQL refuses NUL in text and anything over the B-tree entry limit, and neither backend can store
    a lone surrogate, so those become U+FFFD / a truncated prefix plus ``#sha256:<16 hex>``. The untouched
    value stays inside the JSON ``document`` (escaped there), which is what the chain and exports read.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    original = text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if len(text) > MAX_COLUMN_CHARS:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
        text = f"{text[: MAX_COLUMN_CHARS - _DIGEST_CHARS - len(_DIGEST_MARK)]}{_DIGEST_MARK}{digest}"
    return text


_TEXT_COLUMNS = ("record_id", "service_id", "hook", "hook_instance", "patient_ref", "iss", "tenant", "card_uuid",
                 "dedupe_key")


def _row(
    kind: RowKind, record_id: str, occurred_at: datetime, document: dict[str, Any] | bytes, **columns: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(
        ("service_id", "hook", "hook_instance", "patient_ref", "http_status", "iss", "tenant", "card_uuid",
         "dedupe_key"),
    )
    row.update(columns)
    row.update(
        kind=kind,
        record_id=record_id,
        occurred_at=utc_iso(occurred_at),
        document=(document if isinstance(document, bytes) else canonical_json(document)).decode(),
    )
    for column in _TEXT_COLUMNS:
        row[column] = column_text(row[column])
    status = row["http_status"]
    if status is not None and not (isinstance(status, int) and -(2**31) <= status < 2**31):
        raise TypeError("http_status must be a 32-bit integer")
    return row


def call_document(record: HookCallRecord) -> bytes:
    """The canonical JSON of a call record: the shallow mapping, or (should it hold what the fast path cannot
    encode) the deep ``asdict`` copy through ``canonical_json``, the encoding every stored row was made with."""
    encoded = canonical_document(record.to_dict())
    return encoded if encoded is not None else canonical_json(dataclasses.asdict(record))


def call_row(record: HookCallRecord) -> dict[str, Any]:
    return _row(
        "call",
        record.record_id,
        record.received_at,
        call_document(record),
        service_id=record.service_id,
        hook=record.hook,
        hook_instance=record.hook_instance,
        patient_ref=record.patient_ref,
        http_status=record.http_status,
        iss=record.iss,
        tenant=record.tenant,
    )


def feedback_dedupe_key(record: FeedbackRecord) -> str:
    # Scoped to the caller: another iss/tenant replaying the same item must neither be dropped as a
    # duplicate nor learn, from a "duplicates" count, that the item exists.
    return hashlib.sha256(canonical_json([record.iss, record.tenant, record.dedupe_key()])).hexdigest()


def feedback_row(record: FeedbackRecord, link: FeedbackLink, patient_ref: str | None) -> dict[str, Any]:
    document = record.to_dict()
    document.update(link=link, patient_ref=patient_ref)
    return _row(
        "feedback",
        record.record_id,
        record.received_at,
        document,
        service_id=record.service_id,
        hook_instance=record.hook_instance,
        patient_ref=patient_ref,
        iss=record.iss,
        tenant=record.tenant,
        card_uuid=record.card_uuid,
        dedupe_key=feedback_dedupe_key(record),
    )


def access_row(record_id: str, at: datetime, document: dict[str, Any], patient_ref: str | None,
               hook_instance: str | None = None) -> dict[str, Any]:
    return _row("access", record_id, at, document, patient_ref=patient_ref, hook_instance=hook_instance)


def _document(document: str | dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(document) if isinstance(document, str) else document
    return parsed


def call_from_document(document: str | dict[str, Any]) -> HookCallRecord:
    data = _document(document)
    data["received_at"] = parse_time(data["received_at"])
    data["responded_at"] = parse_time(data.get("responded_at"))
    data["prefetch"] = [PrefetchKeyState(**item) for item in data.get("prefetch", ())]
    data["queries"] = [FhirQuery(**item) for item in data.get("queries", ())]
    return HookCallRecord(**data)


def feedback_from_document(document: str | dict[str, Any]) -> FeedbackRecord:
    data = _document(document)
    data.pop("link", None)
    data.pop("patient_ref", None)
    data["received_at"] = parse_time(data["received_at"])
    data["outcome_timestamp"] = parse_time(data["outcome_timestamp"])
    return FeedbackRecord(**data)
