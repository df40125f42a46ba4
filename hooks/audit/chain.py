"""Keyed hash chain over every audit row (security brief §3.4, "Tamper evidence").

``h_i = HMAC-SHA256(key, h_{i-1} || canonical_json(row_i))`` with ``h_0`` = 32 zero bytes. One chain
covers call, feedback and audit-access rows in a single ``seq`` order. Only whoever holds the key can
extend it, so an edit, a deletion or a move made with database access alone breaks it at that ``seq``.
A rewrite by someone who also holds the key is caught only against a head recorded elsewhere
(``audit verify --expect-head``, docs/audit.md "Archiving a period").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "GENESIS",
    "ROW_COLUMNS",
    "ChainVerdict",
    "canonical_json",
    "chain_hash",
    "verify_rows",
]

GENESIS = bytes(32)

# The hashed content of a row: every stored column but the hash itself. Indexed columns are hashed too,
# so editing ``patient_ref`` (what auditors filter on) is caught even when the JSON document is left alone.
ROW_COLUMNS = (
    "seq",
    "kind",
    "record_id",
    "occurred_at",
    "service_id",
    "hook",
    "hook_instance",
    "patient_ref",
    "http_status",
    "iss",
    "tenant",
    "card_uuid",
    "dedupe_key",
    "document",
)


def _fallback(value: object) -> str:
    # Facts and cards come from handlers; an unexpected type must not turn a valid answer into a 503.
    return str(value)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, naive datetimes as UTC: the same bytes on every machine and backend."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC, default=_fallback)


def chain_hash(key: bytes, previous: bytes, row: Mapping[str, Any]) -> bytes:
    content = {column: row[column] for column in ROW_COLUMNS}
    return hmac.new(key, previous + canonical_json(content), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"chain OK: {self.records} records, head seq {self.head_seq} hash {self.head_hash}"
        return f"chain BROKEN at seq {self.broken_seq}: {self.reason}"


def verify_rows(
    key: bytes,
    rows: Iterable[Mapping[str, Any]],
    *,
    start_seq: int = 1,
    start_hash: bytes = GENESIS,
) -> ChainVerdict:
    """Walk rows in ``seq`` order; stop at the first link that does not hold and say why."""
    expected_seq, previous, count = start_seq, start_hash, 0
    last_seq = start_seq - 1
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            why = (
                f"expected seq {expected_seq} but found {seq}: records {expected_seq}..{seq - 1} were deleted"
                if seq > expected_seq
                else f"seq {seq} appears again or out of order after {expected_seq - 1}: records were moved"
            )
            return ChainVerdict(False, count, last_seq, previous.hex(), broken_seq=expected_seq, reason=why)
        stored = str(row["hash"])
        computed = chain_hash(key, previous, row)
        if not hmac.compare_digest(computed.hex(), stored):
            why = (
                "the stored HMAC does not match the record and the previous link: the record was edited "
                "or moved, a record before it was replaced, or CDS_AUDIT_KEY is not the key that wrote it"
            )
            return ChainVerdict(False, count, last_seq, previous.hex(), broken_seq=seq, reason=why)
        previous, last_seq, expected_seq, count = computed, seq, seq + 1, count + 1
    return ChainVerdict(True, count, last_seq, previous.hex())
