"""SQLite specifics: durable settings on the audit connection, owner-only file, DSN handling
(security brief §3.4 "Durability": WAL + synchronous=FULL survives power loss)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from hooks.audit import AuditError, MemoryAuditStore
from hooks.audit.factory import build_audit_store, open_audit_log
from hooks.audit.sql_store import SqlAuditStore
from hooks.audit.sqlite_store import SqliteAuditLog, sqlite_path
from tests.audit.conftest import TEST_KEY, call_record
from tests.conftest import test_settings as settings_for_test
from tests.support.service_process import CLI, clean_environment, free_port, running_service


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


# --------------------------------------------------------------------------- one serving instance per file


async def test_a_second_serving_instance_on_the_same_file_is_refused(tmp_path: Path) -> None:
    settings = settings_for_test(audit_dsn=f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    first, second = build_audit_store(settings), build_audit_store(settings)
    await first.open()
    try:
        with pytest.raises(AuditError, match=rf"another calcinosis-cds instance \(pid {os.getpid()}\) is serving "
                                             r"the SQLite audit store .*CDS_AUDIT_DSN=postgresql://"):
            await second.open()
        # The auditor's CLI is not a serving instance: it still reads and appends its access rows.
        reader = open_audit_log(settings.audit_dsn or "", TEST_KEY)
        reader.open()
        reader.append_access("show", {})
        reader.close()
    finally:
        await first.close()
    # Released on close (and by the kernel when a process dies): the next instance starts.
    await second.open()
    await second.close()


def test_a_second_service_process_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = clean_environment(CDS_ENVIRONMENT="development", CDS_AUDIT_KEY=TEST_KEY.decode(),
                            CDS_DATA_DIR=str(tmp_path / "data"))
    with running_service(env, tmp_path / "first.log") as first:
        second = subprocess.run([str(CLI), "serve", "--host", "127.0.0.1", "--port", str(free_port())], env=env,
                                capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
        verify = subprocess.run([str(CLI), "audit", "verify", "--allow-empty"], env=env, capture_output=True,
                                text=True, timeout=60, check=False, cwd=tmp_path)
        still_serving = httpx.get(f"{first.base_url}/readyz", timeout=5).status_code
    assert second.returncode == 2
    (line,) = second.stderr.splitlines()
    assert line.startswith(f"calcinosis-cds: refusing to start: another calcinosis-cds instance (pid {first.pid})")
    assert "SQLite is single-instance" in line
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert still_serving == 200
