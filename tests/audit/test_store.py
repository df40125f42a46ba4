"""Both backends: what is written reads back whole, rows cannot be changed, feedback joins its card,
replayed JWT ids are refused (security brief §3.3, §3.4, §1.6)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from hooks.audit import AuditError
from hooks.audit.codec import call_from_document, feedback_from_document
from hooks.audit.factory import open_audit_log
from hooks.audit.schema import SCHEMA_VERSION
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import T0, TEST_KEY, call_record, feedback, raw_execute


async def test_every_hook_call_field_reads_back(store: SqlAuditStore) -> None:
    record = call_record()
    await store.append_call(record)
    rows = list(store.log.rows(hook_instance=record.hook_instance))
    assert len(rows) == 1
    assert call_from_document(rows[0]["document"]) == record
    # The indexed columns auditors filter on carry the same values as the document.
    row = rows[0]
    assert (row["kind"], row["service_id"], row["hook"], row["patient_ref"], row["http_status"]) == (
        "call", "calcinosis-assessment", "patient-view", "Patient/123", 200)
    assert (row["iss"], row["tenant"], row["record_id"]) == ("https://ehr.example.org", "tenant-a", record.record_id)
    assert row["occurred_at"] == "2026-11-21T09:00:00.000000+00:00"
    assert {field.name for field in dataclasses.fields(record)} <= set(call_from_document(row["document"]).to_dict())


async def test_failed_calls_are_recorded_with_status_and_reason(store: SqlAuditStore) -> None:
    record = call_record(http_status=412, reason_class="data-unobtainable", cards=[], rules_fired=[])
    await store.append_call(record)
    (row,) = store.log.rows(kinds=["call"])
    assert row["http_status"] == 412
    assert call_from_document(row["document"]).reason_class == "data-unobtainable"


async def test_rows_filter_by_patient_and_period(store: SqlAuditStore) -> None:
    first = call_record(patient_ref="Patient/1")
    later = call_record(patient_ref="Patient/2", received_at=first.received_at + timedelta(days=40))
    for record in (first, later):
        await store.append_call(record)
    assert [r["record_id"] for r in store.log.rows(patient="Patient/2")] == [later.record_id]
    until = first.received_at + timedelta(days=1)
    assert [r["record_id"] for r in store.log.rows(until=until)] == [first.record_id]
    assert [r["record_id"] for r in store.log.rows(since=until)] == [later.record_id]


def test_schema_is_created_once_and_versioned(audit_dsn: str) -> None:
    for _ in range(2):  # a restart re-opens without migrating twice
        log = open_audit_log(audit_dsn, TEST_KEY)
        log.open()
        assert log.schema_version() == SCHEMA_VERSION
        log.close()


def test_a_database_newer_than_the_code_is_refused(log: AuditLog, audit_dsn: str) -> None:
    raw_execute(audit_dsn, "INSERT INTO schema_version (version, applied_at) VALUES (99, 'later')")
    newer = open_audit_log(audit_dsn, TEST_KEY)
    with pytest.raises(AuditError, match="newer than this code"):
        newer.open()


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET patient_ref = 'Patient/999'",
    "DELETE FROM audit_log",
    "UPDATE card_index SET hook_instance = 'x'",
    "DELETE FROM card_index",
])
async def test_updates_and_deletes_are_refused(store: SqlAuditStore, audit_dsn: str, statement: str) -> None:
    await store.append_call(call_record())
    with pytest.raises(Exception, match="append-only"):
        raw_execute(audit_dsn, statement)
    assert len(list(store.log.rows())) == 1
    assert store.log.verify().ok


# --------------------------------------------------------------------------- feedback


async def test_feedback_links_to_the_card_and_its_hook_call(store: SqlAuditStore) -> None:
    call = call_record()
    await store.append_call(call)
    item = feedback(call, card_index=1)
    result = await store.append_feedback([item])
    assert (result.stored, result.duplicates) == (1, 0)
    (row,) = store.log.rows(kinds=["feedback"])
    assert row["hook_instance"] == call.hook_instance == item.hook_instance
    assert row["card_uuid"] == call.cards[1]["uuid"]
    # Linked feedback inherits the call's patient, so "everything about Patient/123" includes it.
    assert row["patient_ref"] == "Patient/123"
    stored = feedback_from_document(row["document"])
    assert stored == item


async def test_the_same_feedback_twice_is_stored_once(store: SqlAuditStore) -> None:
    call = call_record()
    await store.append_call(call)
    item = feedback(call)
    again = dataclasses.replace(item, record_id="another-delivery")
    first = await store.append_feedback([item, again])
    second = await store.append_feedback([dataclasses.replace(item, record_id="third-delivery")])
    assert (first.stored, first.duplicates, second.stored, second.duplicates) == (1, 1, 0, 1)
    assert len(list(store.log.rows(kinds=["feedback"]))) == 1


async def test_a_suggestion_accepted_twice_is_stored_once(store: SqlAuditStore) -> None:
    """The sandbox reports an acceptance on every click: same card, outcome, suggestion and caller is one row;
    another suggestion, an override, or another caller is new feedback."""
    call = call_record()
    await store.append_call(call)
    accepted = feedback(call, outcome="accepted", accepted_suggestions=["s-1"], override_reason_code=None,
                        override_reason_system=None)
    clicks = [dataclasses.replace(accepted, record_id=f"click-{n}",
                                  outcome_timestamp=accepted.outcome_timestamp + timedelta(seconds=n))
              for n in range(3)]
    first = await store.append_feedback(clicks)
    later = await store.append_feedback([
        dataclasses.replace(accepted, record_id="retry", outcome_timestamp=accepted.outcome_timestamp + timedelta(1)),
        dataclasses.replace(accepted, record_id="other-suggestion", accepted_suggestions=["s-2"]),
        dataclasses.replace(accepted, record_id="both", accepted_suggestions=["s-2", "s-1", "s-1"]),
        dataclasses.replace(accepted, record_id="other-caller", tenant="tenant-b"),
    ])
    assert (first.stored, first.duplicates) == (1, 2)
    assert (later.stored, later.duplicates) == (3, 1)
    kept = {row["record_id"] for row in store.log.rows(kinds=["feedback"])}
    assert kept == {"click-0", "other-suggestion", "both", "other-caller"}


async def test_repeated_reports_with_different_outcomes_are_all_kept(store: SqlAuditStore) -> None:
    call = call_record()
    await store.append_call(call)
    overridden = feedback(call)
    accepted = feedback(call, outcome="accepted", accepted_suggestions=["s-1"], override_reason_code=None,
                        override_reason_system=None, outcome_timestamp=overridden.outcome_timestamp + timedelta(1))
    result = await store.append_feedback([overridden, accepted])
    assert result.stored == 2
    outcomes = [feedback_from_document(r["document"]).outcome for r in store.log.rows(kinds=["feedback"])]
    assert outcomes == ["overridden", "accepted"]


async def test_feedback_from_another_tenant_does_not_join_the_card(store: SqlAuditStore) -> None:
    call = call_record()
    await store.append_call(call)
    own = feedback(call)
    foreign = feedback(call, tenant="tenant-b")
    result = await store.append_feedback([own, foreign])
    # Stored (the attempt is evidence) but unlinked: no hookInstance, no patient, marked as such.
    assert result.stored == 2
    rows = {r["tenant"]: r for r in store.log.rows(kinds=["feedback"])}
    assert rows["tenant-b"]["hook_instance"] is None
    assert rows["tenant-b"]["patient_ref"] is None
    assert '"link":"other-caller"' in rows["tenant-b"]["document"]
    assert rows["tenant-a"]["hook_instance"] == call.hook_instance
    assert list(store.log.rows(patient="Patient/123", kinds=["feedback"])) == [rows["tenant-a"]]


async def test_feedback_for_an_unknown_card_is_kept_unlinked(store: SqlAuditStore) -> None:
    call = call_record()
    item = feedback(call)  # the call itself was never stored
    assert (await store.append_feedback([item])).stored == 1
    (row,) = store.log.rows(kinds=["feedback"])
    assert row["hook_instance"] is None
    assert '"link":"unknown-card"' in row["document"]


# --------------------------------------------------------------------------- jti and health


@pytest.fixture
async def clocked_store(audit_dsn: str) -> AsyncIterator[tuple[SqlAuditStore, list[datetime]]]:
    """A store whose clock the test moves (``now[0]``): replay-cache expiry never reads the wall clock."""
    now = [T0]
    opened = SqlAuditStore(open_audit_log(audit_dsn, TEST_KEY, clock=lambda: now[0]))
    await opened.open()
    try:
        yield opened, now
    finally:
        await opened.close()


async def test_a_jwt_id_is_accepted_once_per_issuer(clocked_store: tuple[SqlAuditStore, list[datetime]]) -> None:
    store, now = clocked_store
    expires = now[0] + timedelta(minutes=5)
    assert await store.remember_jti("https://ehr.example.org", "jti-1", expires) is True
    assert await store.remember_jti("https://ehr.example.org", "jti-1", expires) is False
    assert await store.remember_jti("https://other.example.org", "jti-1", expires) is True


async def test_long_expired_jwt_ids_are_purged(clocked_store: tuple[SqlAuditStore, list[datetime]]) -> None:
    store, now = clocked_store
    expires = now[0] + timedelta(minutes=5)
    assert await store.remember_jti("https://ehr.example.org", "old", expires) is True
    # A minute later the id is still a replay; two hours later (past expiry plus grace) its row is purged
    # and the id may be recorded again.
    now[0] = T0 + timedelta(minutes=1)
    assert await store.remember_jti("https://ehr.example.org", "old", expires) is False
    now[0] = T0 + timedelta(hours=2)
    assert await store.remember_jti("https://ehr.example.org", "old", now[0] + timedelta(minutes=5))


async def test_ping_and_verify_through_the_async_store(store: SqlAuditStore) -> None:
    await store.ping()
    await store.append_call(call_record())
    assert (await store.verify()).ok


async def test_a_closed_store_refuses_appends(audit_dsn: str) -> None:
    closed = SqlAuditStore(open_audit_log(audit_dsn, TEST_KEY))
    with pytest.raises(AuditError):
        await closed.append_call(call_record())
