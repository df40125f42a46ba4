"""Tamper evidence (security brief §3.4): someone with database access drops the triggers and edits,
deletes or reorders rows; ``verify`` names the first broken ``seq``. Both backends."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hooks.audit.chain import GENESIS, verify_rows
from hooks.audit.factory import open_audit_log
from hooks.audit.sql import AuditLog
from tests.audit.conftest import TEST_KEY, call_record, drop_triggers, feedback, raw_execute


@pytest.fixture
def five(log: AuditLog) -> AuditLog:
    """Calls and feedback interleaved in one chain: seq 1..5."""
    first, second = call_record(), call_record(patient_ref="Patient/456")
    log.append_call(first)
    log.append_feedback([feedback(first)])
    log.append_call(second)
    log.append_feedback([feedback(second)])
    log.append_access("show", {"patient": "Patient/123"})
    return log


def test_an_untouched_chain_verifies(five: AuditLog) -> None:
    verdict = five.verify()
    assert verdict.ok
    assert verdict.records == 5
    assert verdict.head_seq == 5
    assert [row["kind"] for row in five.rows()] == ["call", "feedback", "call", "feedback", "access"]


# What someone with database access (but not the key) might do, after dropping the triggers.
TAMPERING = {
    "edited document": (
        ["UPDATE audit_log SET document = replace(document, 'Patient/456', 'Patient/789') WHERE seq = 3"],
        3, "edited"),
    # Auditors filter on patient_ref; hiding a row from "everything about Patient/123" must show.
    "edited indexed column": (["UPDATE audit_log SET patient_ref = 'Patient/000' WHERE seq = 1"], 1, "edited"),
    "deleted record": (["DELETE FROM card_index WHERE seq = 3", "DELETE FROM audit_log WHERE seq = 3"],
                       3, "deleted"),
    "deleted record, later seq renumbered": (
        ["DELETE FROM audit_log WHERE seq = 5", "UPDATE audit_log SET seq = 5 WHERE seq = 4"], 4, "deleted"),
    # Whole rows swapped, stored hashes included, through a free seq value.
    "reordered records": (
        ["UPDATE audit_log SET seq = 1000 WHERE seq = 2", "UPDATE audit_log SET seq = 2 WHERE seq = 4",
         "UPDATE audit_log SET seq = 4 WHERE seq = 1000"], 2, "moved"),
}


@pytest.mark.parametrize("attack", list(TAMPERING))
def test_tampering_is_caught_at_the_first_changed_seq(five: AuditLog, audit_dsn: str, attack: str) -> None:
    statements, broken_seq, why = TAMPERING[attack]
    drop_triggers(audit_dsn)
    raw_execute(audit_dsn, *statements)
    verdict = five.verify()
    assert not verdict.ok
    assert verdict.broken_seq == broken_seq
    assert why in (verdict.reason or "")
    assert f"BROKEN at seq {broken_seq}" in verdict.describe()


def test_a_different_key_does_not_verify(five: AuditLog, audit_dsn: str) -> None:
    other = open_audit_log(audit_dsn, b"some other key")
    other.open()
    try:
        assert other.verify().broken_seq == 1
    finally:
        other.close()


def test_appends_after_a_restart_continue_the_same_chain(five: AuditLog, audit_dsn: str) -> None:
    five.close()
    reopened = open_audit_log(audit_dsn, TEST_KEY)
    reopened.open()
    try:
        reopened.append_call(call_record())
        assert reopened.verify().records == 6
    finally:
        reopened.close()


def test_a_chain_slice_verifies_from_its_previous_link(five: AuditLog) -> None:
    rows = list(five.rows())
    previous = bytes.fromhex(rows[1]["hash"])
    assert verify_rows(TEST_KEY, rows[2:], start_seq=3, start_hash=previous).ok
    assert not verify_rows(TEST_KEY, rows[2:], start_seq=3, start_hash=GENESIS).ok


def test_two_processes_appending_together_keep_one_valid_chain(log: AuditLog, audit_dsn: str,
                                                               tmp_path: Path) -> None:
    """Two service instances sharing one store (brief §3.4: one chain serialised by the write lock)."""
    count, tenants_started = 150, ("instance-a", "instance-b")
    writers = [
        subprocess.Popen([sys.executable, "-m", "tests.audit.writer", audit_dsn, str(count), tenant, str(tmp_path)])
        for tenant in tenants_started
    ]
    # Both open their store first (the start-up of each may take seconds on a loaded machine), then go together.
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"ready-{tenant}").exists() for tenant in tenants_started):
        assert time.monotonic() < deadline, "a writer did not start"
        assert all(writer.poll() is None for writer in writers), "a writer exited before the start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    verdict = log.verify()
    assert verdict.ok, verdict.describe()
    assert verdict.records == 2 * count
    tenants = [row["tenant"] for row in log.rows()]
    assert tenants.count("instance-a") == tenants.count("instance-b") == count
    switches = sum(1 for a, b in itertools.pairwise(tenants) if a != b)
    assert switches > 1, "the two writers never interleaved; the test did not exercise contention"
