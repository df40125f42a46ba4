"""SQLite specifics: durable settings on the audit connection, owner-only file, DSN handling
(security brief §3.4 "Durability": WAL + synchronous=FULL survives power loss)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hooks.audit import AuditError, MemoryAuditStore
from hooks.audit.factory import build_audit_store, open_audit_log
from hooks.audit.sql_store import SqlAuditStore
from hooks.audit.sqlite_store import SqliteAuditLog, sqlite_path
from tests.audit.conftest import TEST_KEY, call_record
from tests.conftest import test_settings as settings_for_test


def test_the_audit_connection_is_wal_with_full_sync(tmp_path: Path) -> None:
    log = SqliteAuditLog(tmp_path / "a.sqlite3", TEST_KEY)
    log.open()
    try:
        assert log._execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        log.close()


def test_the_database_file_and_directory_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "audit.sqlite3"
    log = open_audit_log(f"sqlite:///{path}", TEST_KEY)
    log.open()
    log.append_call(call_record())
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(("dsn", "expected"), [
    ("sqlite:///data/audit.sqlite3", Path("data/audit.sqlite3")),
    ("sqlite:////var/lib/cds/audit.sqlite3", Path("/var/lib/cds/audit.sqlite3")),
])
def test_sqlite_dsns_follow_the_three_or_four_slash_convention(dsn: str, expected: Path) -> None:
    assert sqlite_path(dsn) == expected


@pytest.mark.parametrize("dsn", ["sqlite:///:memory:", "sqlite://relative", "mysql://x/y"])
def test_non_durable_or_unknown_dsns_are_refused(dsn: str) -> None:
    with pytest.raises(AuditError):
        open_audit_log(dsn, TEST_KEY)


def test_settings_choose_the_backend(tmp_path: Path) -> None:
    sqlite_store = build_audit_store(settings_for_test(audit_dsn=f"sqlite:///{tmp_path}/x.sqlite3"))
    assert isinstance(sqlite_store, SqlAuditStore)
    assert isinstance(sqlite_store.log, SqliteAuditLog)
    assert isinstance(build_audit_store(settings_for_test(audit_dsn="memory://")), MemoryAuditStore)
    # Default: under the data directory.
    default = build_audit_store(settings_for_test(data_dir=tmp_path / "d", audit_dsn=None))
    assert isinstance(default, SqlAuditStore)
    assert isinstance(default.log, SqliteAuditLog)
    assert default.log.path == tmp_path / "d" / "audit.sqlite3"


def test_an_empty_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="key"):
        SqliteAuditLog(tmp_path / "a.sqlite3", b"")


async def test_a_failing_disk_is_an_audit_error(tmp_path: Path) -> None:
    store = SqlAuditStore(open_audit_log(f"sqlite:///{tmp_path}/a.sqlite3", TEST_KEY))
    await store.open()
    try:
        store.log._execute("PRAGMA query_only=ON")  # stands in for a read-only or full disk
        with pytest.raises(AuditError, match="append failed"):
            await store.append_call(call_record())
    finally:
        await store.close()
