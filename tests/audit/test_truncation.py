"""Deleting the newest rows, or all of them, is caught (review finding 2): the writer refuses to extend a
chain whose head fell behind what it wrote, the service refuses to start on a head its key did not write
or behind a checkpoint, ``verify`` compares the chain with every checkpoint it can read (the ``checkpoint``
table and the JSON-lines file off the database) and fails on an empty log unless ``--allow-empty``.
Both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from hooks.audit import AuditError
from hooks.audit.factory import open_audit_log
from hooks.audit.schema import SCHEMA_VERSION
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore
from hooks.cli import main
from tests.audit.conftest import TEST_KEY, call_record, drop_triggers, raw_execute


@pytest.fixture
def checkpoint_file(audit_dsn: str, tmp_path: Path) -> Path:
    """Where this backend's checkpoints land off the database."""
    if audit_dsn.startswith("sqlite:"):
        path = Path(audit_dsn.removeprefix("sqlite:///"))
        return path.with_name(path.name + ".checkpoints.jsonl")
    return tmp_path / "pg-data" / "audit-checkpoints.jsonl"


def open_log(audit_dsn: str, checkpoint_file: Path, every: int = 100, key: bytes = TEST_KEY) -> AuditLog:
    log = open_audit_log(audit_dsn, key, checkpoint_every=every,
                         checkpoint_file=None if audit_dsn.startswith("sqlite:") else checkpoint_file)
    log.open()
    return log


def delete_from(dsn: str, seq: int, *, checkpoints: bool = False) -> None:
    drop_triggers(dsn)
    statements = [f"DELETE FROM card_index WHERE seq >= {seq}", f"DELETE FROM audit_log WHERE seq >= {seq}"]  # noqa: S608
    if checkpoints:
        statements.append("DELETE FROM checkpoint")
    raw_execute(dsn, *statements)


def verify_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dsn: str,
               *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("CDS_AUDIT_KEY", TEST_KEY.decode())
    monkeypatch.setenv("CDS_ENVIRONMENT", "production")
    code = main(["audit", "verify", "--dsn", dsn, *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_the_writer_refuses_to_extend_a_chain_cut_at_its_end(store: SqlAuditStore, audit_dsn: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        await store.append_call(call_record())
    delete_from(audit_dsn, 2)  # the review's case: the last 2 of 3 rows
    with pytest.raises(AuditError, match=r"chain ends at seq 1 .* seq 3: the newest records were deleted"):
        await store.append_call(call_record())
    assert "audit chain refused" in caplog.text
    assert [row["seq"] for row in store.log.rows()] == [1]  # nothing was appended to the cut chain


async def test_the_writer_refuses_a_head_rewritten_with_the_key(store: SqlAuditStore, audit_dsn: str) -> None:
    for _ in range(3):
        await store.append_call(call_record())
    delete_from(audit_dsn, 3)
    rewriter = open_audit_log(audit_dsn, TEST_KEY)  # a key holder's own tool re-creates seq 3
    rewriter.open()
    rewriter.append_call(call_record())
    rewriter.close()
    with pytest.raises(AuditError, match="seq 3 no longer has the hash"):
        await store.append_call(call_record())


async def test_the_service_does_not_start_with_a_key_that_did_not_write_the_chain(store: SqlAuditStore,
                                                                                   audit_dsn: str) -> None:
    await store.append_call(call_record())
    other = SqlAuditStore(open_audit_log(audit_dsn, b"another key"))
    with pytest.raises(AuditError, match="HMAC of the head"):
        await other.open()
    # The CLI's verify still reads the chain with that key and says where it breaks.
    log = open_audit_log(audit_dsn, b"another key")
    log.open()
    try:
        assert log.verify().broken_seq == 1
    finally:
        log.close()


def test_checkpoints_are_written_every_n_appends_to_the_table_and_the_file(audit_dsn: str,
                                                                           checkpoint_file: Path) -> None:
    log = open_log(audit_dsn, checkpoint_file, every=2)
    try:
        for _ in range(5):
            log.append_call(call_record())
        in_table = [(c.seq, c.hash) for c in log.checkpoints() if c.source == "the checkpoint table"]
        assert in_table == [(2, log.hash_at(2)), (4, log.hash_at(4))]
        lines = [orjson.loads(line) for line in checkpoint_file.read_bytes().splitlines()]
        assert [(line["seq"], line["hash"]) for line in lines] == in_table
        assert all(line["at"] for line in lines)
        assert checkpoint_file.stat().st_mode & 0o077 == 0
        verdict = log.verify()
        assert verdict.ok
        assert verdict.checkpoints == 4  # two seqs, each in the table and in the file
        assert "checkpoint(s) match" in verdict.describe()
    finally:
        log.close()


@pytest.mark.parametrize("cut", [4, 1], ids=["newest rows", "every row"])
def test_verify_fails_when_the_chain_is_shorter_than_a_checkpoint(audit_dsn: str, checkpoint_file: Path,
                                                                  cut: int) -> None:
    log = open_log(audit_dsn, checkpoint_file, every=2)
    for _ in range(5):
        log.append_call(call_record())
    log.close()
    delete_from(audit_dsn, cut)
    reader = open_log(audit_dsn, checkpoint_file, every=2)
    try:
        verdict = reader.verify()
        assert not verdict.ok
        assert verdict.broken_seq == cut
        assert "were deleted from the end" in (verdict.reason or "")
    finally:
        reader.close()
    # And the service refuses to start on it.
    store = SqlAuditStore(open_log(audit_dsn, checkpoint_file, every=2))
    with pytest.raises(AuditError, match="newest records were deleted"):
        store.log.check_head()
    store.log.close()


def test_the_file_catches_what_the_database_checkpoints_no_longer_show(audit_dsn: str,
                                                                       checkpoint_file: Path) -> None:
    log = open_log(audit_dsn, checkpoint_file, every=2)
    for _ in range(4):
        log.append_call(call_record())
    log.close()
    delete_from(audit_dsn, 1, checkpoints=True)  # rows and database checkpoints gone; the file is off the box
    reader = open_log(audit_dsn, checkpoint_file, every=2)
    try:
        verdict = reader.verify()
        assert not verdict.ok
        assert "checkpoint file" in (verdict.reason or "")
    finally:
        reader.close()


def test_a_checkpoint_with_another_hash_is_a_rewrite(audit_dsn: str, checkpoint_file: Path) -> None:
    log = open_log(audit_dsn, checkpoint_file, every=2)
    for _ in range(3):
        log.append_call(call_record())
    log.close()
    delete_from(audit_dsn, 2, checkpoints=True)
    # A key holder re-appends two rows with a tool that does not read this checkpoint file.
    rewriter = open_audit_log(audit_dsn, TEST_KEY, checkpoint_every=0,
                              checkpoint_file=checkpoint_file.with_name("elsewhere.jsonl"))
    rewriter.open()
    rewriter.append_call(call_record())
    rewriter.append_call(call_record())
    rewriter.close()
    reader = open_log(audit_dsn, checkpoint_file)
    try:
        verdict = reader.verify()
        assert not verdict.ok
        assert verdict.broken_seq == 2
        assert "rewritten" in (verdict.reason or "")
    finally:
        reader.close()


async def test_a_clean_shutdown_checkpoints_the_head(audit_dsn: str, checkpoint_file: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqlAuditStore(open_log(audit_dsn, checkpoint_file))
    store.log.close()
    await store.open()
    for _ in range(3):
        await store.append_call(call_record())
    await store.close()
    delete_from(audit_dsn, 2)  # the review's case, after a restart: the instance's memory is gone
    extra = [] if audit_dsn.startswith("sqlite:") else ["--checkpoints", str(checkpoint_file)]
    code, out = verify_cli(capsys, monkeypatch, audit_dsn, *extra)
    assert code == 1
    assert "BROKEN at seq 2" in out
    assert "deleted from the end" in out


def test_verify_refuses_an_empty_log_unless_told_it_is_new(log: AuditLog, audit_dsn: str,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = verify_cli(capsys, monkeypatch, audit_dsn)
    assert code == 1
    assert "chain EMPTY" in out
    code, out = verify_cli(capsys, monkeypatch, audit_dsn, "--allow-empty")
    assert code == 0
    assert "chain OK: 0 records" in out


def test_a_version_1_database_gains_the_checkpoint_table(audit_dsn: str, checkpoint_file: Path) -> None:
    log = open_log(audit_dsn, checkpoint_file)
    log.append_call(call_record())
    log.close()
    raw_execute(audit_dsn, "DROP TABLE checkpoint", "DELETE FROM schema_version WHERE version = 2")
    upgraded = open_log(audit_dsn, checkpoint_file)
    try:
        assert upgraded.schema_version() == SCHEMA_VERSION == 2
        assert upgraded.checkpoints() == []
        assert upgraded.verify().ok
    finally:
        upgraded.close()


def test_checkpoint_file_lines_of_another_database_or_garbage_are_ignored(tmp_path: Path) -> None:
    from hooks.audit.schema import read_checkpoint_file

    path = tmp_path / "c.jsonl"
    lines: list[Any] = [{"seq": 5, "hash": "ab" * 32, "at": "t", "database": "other/public"},
                        {"seq": 2, "hash": "CD" * 32, "at": "t", "database": "db/s"}]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\nnot json\n{}\n")
    assert [(c.seq, c.hash) for c in read_checkpoint_file(path, "db/s")] == [(2, "cd" * 32)]
    assert read_checkpoint_file(tmp_path / "missing.jsonl") == []
