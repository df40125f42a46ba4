"""Every request leaves a record, whatever text it carries (review finding 3): NUL, lone surrogates and
over-long values in indexed columns, integers beyond 64 bits and non-string keys in the document. The raw
value stays (escaped) in the JSON document; indexed columns hold a sanitised copy. Both backends."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from hooks.audit import AuditError
from hooks.audit.chain import canonical_json
from hooks.audit.codec import MAX_COLUMN_CHARS, call_from_document, column_text
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import T0, call_record, feedback
from tests.audit.test_web import app_for, read_log, request_body
from tests.conftest import running_client


def test_canonical_json_encodes_what_orjson_refuses() -> None:
    value: dict[Any, Any] = {"big": 2**70, "small": -(2**64), 3: "int key", (1, 2): "tuple key",
                             "lone": "a\ud800b", "\udcff": 1, "ok": [1, 2.5, None, True]}
    encoded = canonical_json(value)
    assert orjson.loads(encoded) == {"big": str(2**70), "small": str(-(2**64)), "3": "int key",
                                     "(1, 2)": "tuple key", "lone": "a\\ud800b", "\\udcff": 1,
                                     "ok": [1, 2.5, None, True]}
    assert canonical_json(value) == encoded  # deterministic
    # Records that were always encodable keep exactly their bytes (existing chains still verify).
    plain = {"b": 1, "a": [2**63, "x"], "t": datetime(2026, 1, 1)}
    assert canonical_json(plain) == orjson.dumps(plain, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)


def test_column_text_sanitises_indexed_values() -> None:
    assert column_text("nope\x00") == "nope\ufffd"
    assert column_text("a\ud800") == "a\ufffd"
    assert column_text(None) is None
    assert column_text(17) == "17"
    long = column_text("P" * 10_000)
    assert long is not None
    assert len(long) == MAX_COLUMN_CHARS
    assert "#sha256:" in long
    assert column_text("P" * 10_000 + "x") != long  # the digest keeps distinct values distinct


HOSTILE = "Patient/\x00\ud800" + "x" * 5000


async def test_hostile_text_in_every_indexed_column_is_recorded(store: SqlAuditStore) -> None:
    record = call_record(service_id="nope\x00", hook="patient-view\x00", hook_instance="hi\x00\ud800",
                         patient_ref=HOSTILE, iss="https://ehr\x00", tenant="t\x00" * 2000,
                         facts_used=[{"value": 2**80, 7: "int key"}], user_ref="Practitioner/\ud83d")
    record.cards[0]["uuid"] = "card\x00uuid"
    await store.append_call(record)
    (row,) = store.log.rows()
    assert row["service_id"] == "nope\ufffd"
    assert "\x00" not in (row["tenant"] or "")
    assert len(row["tenant"] or "") <= MAX_COLUMN_CHARS
    document = orjson.loads(row["document"])
    assert document["service_id"] == "nope\x00"  # the raw value, escaped in the JSON text
    assert document["patient_ref"] == "Patient/\x00\\ud800" + "x" * 5000
    assert document["facts_used"][0] == {"value": str(2**80), "7": "int key"}
    assert call_from_document(row["document"]).service_id == "nope\x00"
    # The card index and feedback lookups use the same sanitised text.
    item = feedback(record, 0, card_uuid="card\x00uuid")
    assert (await store.append_feedback([item])).stored == 1
    (stored,) = store.log.rows(kinds=["feedback"])
    assert stored["hook_instance"] == row["hook_instance"]
    assert list(store.log.rows(patient=HOSTILE, kinds=["call"]))  # findable by the raw value
    assert await store.remember_jti("https://ehr\x00", "jti\x00", T0 + timedelta(minutes=5))
    assert (await store.verify()).ok


async def test_a_record_that_still_cannot_be_encoded_is_an_audit_error(store: SqlAuditStore) -> None:
    deep: Any = []
    for _ in range(400):  # beyond orjson's nesting limit
        deep = [deep]
    with pytest.raises(AuditError, match="encoding the record"):
        await store.append_call(call_record(facts_used=[{"deep": deep}]))
    await store.append_call(call_record())  # the store is still usable
    assert (await store.verify()).records == 1


def test_a_report_repeated_at_another_time_or_offset_is_the_same_feedback(log: AuditLog) -> None:
    call = call_record()
    log.append_call(call)
    utc = feedback(call, outcome_timestamp=datetime(2026, 11, 21, 9, 5, tzinfo=UTC))
    paris = dataclasses.replace(utc, record_id="again",
                                outcome_timestamp=datetime(2026, 11, 21, 10, 5, tzinfo=timezone(timedelta(hours=1))))
    later = dataclasses.replace(utc, record_id="later", outcome_timestamp=datetime(2026, 11, 21, 9, 7, tzinfo=UTC))
    assert utc.dedupe_key() == paris.dedupe_key() == later.dedupe_key()
    result = log.append_feedback([utc, paris, later])
    assert (result.stored, result.duplicates) == (1, 2)


async def test_a_nul_in_the_service_path_is_a_recorded_404(audit_dsn: str) -> None:
    async with running_client(app_for(audit_dsn)) as client:
        missing = await client.post("/cds-services/nope%00", json=request_body())
        fed_back = await client.post("/cds-services/stub/feedback", json={"feedback": [
            {"card": "c\u0000d", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T09:05:00Z"}]})
    assert missing.status_code == 404
    assert fed_back.status_code == 200
    log = read_log(audit_dsn)
    try:
        (call,) = log.rows(kinds=["call"])
        assert call["http_status"] == 404
        assert call["service_id"] == "nope\ufffd"
        assert orjson.loads(call["document"])["service_id"] == "nope\x00"
        (item,) = log.rows(kinds=["feedback"])
        assert item["card_uuid"] == "c\ufffdd"
        assert log.verify().ok
    finally:
        log.close()
