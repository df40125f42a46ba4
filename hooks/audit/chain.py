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
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import orjson

__all__ = [
    "GENESIS",
    "ROW_COLUMNS",
    "ChainVerdict",
    "Checkpoint",
    "canonical_document",
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


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC
# What orjson encodes as a JSON integer; anything wider becomes its decimal text.
_INT_RANGE = range(-(2**63), 2**64)


def _fallback(value: object) -> str:
    # Facts and cards come from handlers; an unexpected type must not turn a valid answer into a 503.
    return str(value)


def _text(value: str) -> str:
    # A lone surrogate cannot be UTF-8: keep it visible as its escape (``\ud800``) rather than lose the record.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _scrub(value: Any) -> Any:
    """What orjson refuses, made encodable: non-string keys as text, integers beyond 64 bits as text,
    lone surrogates escaped. Only reached when the fast path failed, so valid records keep their bytes."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if value in _INT_RANGE else str(value)
    if isinstance(value, dict):
        return {(_text(key) if isinstance(key, str) else _text(_fallback(key))): _scrub(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, naive datetimes as UTC: the same bytes on every machine and backend.

    Any record encodes: what JSON cannot carry as is (a non-string key, an integer beyond 64 bits, a lone
    surrogate, an unknown type) is written as text. Only nesting deeper than orjson's limit still raises
    ``TypeError``, which the store turns into ``AuditError``.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS, default=_fallback)
    except TypeError:
        return orjson.dumps(_scrub(value), option=_OPTIONS, default=lambda item: _text(_fallback(item)))


def _as_asdict_would(value: object) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return _fallback(value)


def canonical_document(value: Any) -> bytes | None:
    """``canonical_json`` of a shallow record mapping (``HookCallRecord.to_dict``), with the bytes the deep
    ``asdict`` copy gave: a dataclass nested anywhere is encoded as its ``asdict`` (orjson's own dataclass
    encoding keeps field order, not sorted keys). None when the fast path cannot encode it; the caller then
    encodes the deep copy with ``canonical_json``, exactly as before."""
    try:
        return orjson.dumps(value, option=_OPTIONS | orjson.OPT_PASSTHROUGH_DATACLASS, default=_as_asdict_would)
    except TypeError:
        return None


def chain_hash(key: bytes, previous: bytes, row: Mapping[str, Any]) -> bytes:
    content = {column: row[column] for column in ROW_COLUMNS}
    return hmac.new(key, previous + canonical_json(content), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A chain head recorded as it was written (``checkpoint`` table, checkpoint file, ``--expect-head``)."""

    seq: int
    hash: str
    at: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None
    checkpoints: int = 0

    def describe(self) -> str:
        if self.ok:
            anchored = f"; {self.checkpoints} checkpoint(s) match" if self.checkpoints else ""
            return f"chain OK: {self.records} records, head seq {self.head_seq} hash {self.head_hash}{anchored}"
        return f"chain BROKEN at seq {self.broken_seq}: {self.reason}"


def verify_rows(
    key: bytes,
    rows: Iterable[Mapping[str, Any]],
    *,
    start_seq: int = 1,
    start_hash: bytes = GENESIS,
    checkpoints: Iterable[Checkpoint] = (),
) -> ChainVerdict:
    """Walk rows in ``seq`` order; stop at the first link that does not hold and say why.

    ``checkpoints`` are heads recorded earlier: the chain must reach each one (at or after ``start_seq``)
    with the same hash, otherwise records were deleted from the end or the chain was rewritten with the key.
    """
    anchors: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        if checkpoint.seq >= start_seq:
            anchors.setdefault(checkpoint.seq, []).append(checkpoint)
    expected_seq, previous, count, matched = start_seq, start_hash, 0, 0
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
        for anchor in anchors.get(seq, ()):
            if anchor.hash.lower() != stored:
                why = (
                    f"the hash differs from the checkpoint recorded for this seq ({anchor.source or 'checkpoint'}"
                    f"{', ' + anchor.at if anchor.at else ''}: {anchor.hash}): the chain was rewritten by a key holder"
                )
                return ChainVerdict(False, count, last_seq, previous.hex(), broken_seq=seq, reason=why)
            matched += 1
        previous, last_seq, expected_seq, count = computed, seq, seq + 1, count + 1
    beyond = [anchor for seq, found in anchors.items() if seq > last_seq for anchor in found]
    if beyond:
        furthest = max(beyond, key=lambda anchor: anchor.seq)
        why = (
            f"the chain ends at seq {last_seq} but a checkpoint ({furthest.source or 'checkpoint'}"
            f"{', ' + furthest.at if furthest.at else ''}) recorded seq {furthest.seq}: records "
            f"{last_seq + 1}..{furthest.seq} (at least) were deleted from the end"
        )
        return ChainVerdict(False, count, last_seq, previous.hex(), broken_seq=last_seq + 1, reason=why)
    return ChainVerdict(True, count, last_seq, previous.hex(), checkpoints=matched)
