"""Every store call is bounded (review finding 1) and PostgreSQL appends run READ COMMITTED whatever the
database default (finding 4). A session sitting on the chain lock costs one bounded wait and an AuditError
(the app's 503), never a hung request; calls beyond the queue limit are refused at once; /readyz does not
queue behind a stuck append. Both backends unless marked."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from hooks.audit import AuditError
from hooks.audit.factory import open_audit_log
from hooks.audit.sql_store import SqlAuditStore
from hooks.audit.sqlite_store import BUSY_TIMEOUT_S, SqliteAuditLog
from tests.audit.conftest import PG_ADMIN, TEST_KEY, call_record, chain_lock_held
from tests.audit.test_web import app_for, request_body
from tests.conftest import running_client


async def test_a_stuck_lock_holder_costs_one_bounded_wait(store: SqlAuditStore, audit_dsn: str) -> None:
    await store.append_call(call_record())
    with chain_lock_held(audit_dsn):
        started = time.monotonic()
        with pytest.raises(AuditError):
            await store.append_call(call_record())
        waited = time.monotonic() - started
    # The backend's lock wait (~2 s) ends it, inside the 3 s budget of the store.
    assert 1.0 < waited < store.timeout_s + 0.5, waited
    # Once the holder lets go, the same store appends again and the chain is whole.
    await store.append_call(call_record())
    verdict = await store.verify()
    assert verdict.ok
    assert verdict.records == 2


async def test_the_store_budget_answers_before_the_lock_wait_ends(audit_dsn: str) -> None:
    store = SqlAuditStore(open_audit_log(audit_dsn, TEST_KEY), timeout_s=0.5)
    await store.open()
    try:
        with chain_lock_held(audit_dsn):
            started = time.monotonic()
            with pytest.raises(AuditError, match=r"did not finish within 0\.5 s"):
                await store.append_call(call_record())
            assert time.monotonic() - started < 1.0
            # Queued behind the stuck append, a jti check is bounded the same way.
            started = time.monotonic()
            with pytest.raises(AuditError):
                await store.remember_jti("https://ehr.example.org", "j-1", call_record().received_at)
            assert time.monotonic() - started < 1.0
    finally:
        await store.close()


async def test_calls_beyond_the_queue_limit_are_refused_at_once(audit_dsn: str) -> None:
    store = SqlAuditStore(open_audit_log(audit_dsn, TEST_KEY), max_pending=2)
    await store.open()
    try:
        with chain_lock_held(audit_dsn):
            started = time.monotonic()
            tasks = [asyncio.ensure_future(store.append_call(call_record())) for _ in range(6)]
            await asyncio.sleep(0.05)
            refused = [task for task in tasks if task.done()]
            assert len(refused) == 4
            assert time.monotonic() - started < 0.5
            for task in refused:
                with pytest.raises(AuditError, match="calls waiting"):
                    task.result()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, AuditError) for result in results)
        await store.append_call(call_record())  # the counter came back down
    finally:
        await store.close()


async def test_ping_does_not_queue_behind_a_stuck_append(store: SqlAuditStore, audit_dsn: str) -> None:
    with chain_lock_held(audit_dsn):
        append = asyncio.ensure_future(store.append_call(call_record()))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await store.ping()
        assert time.monotonic() - started < 0.5
        with pytest.raises(AuditError):
            await append


async def test_ping_fails_while_the_writer_is_stuck_beyond_the_budget(store: SqlAuditStore) -> None:
    release = threading.Event()
    blocker = asyncio.ensure_future(store._run(release.wait, 10.0, budget_s=5.0))
    await asyncio.sleep(0.1)
    store._busy_since = time.monotonic() - store.timeout_s - 1  # the writer has been on one call too long
    try:
        with pytest.raises(AuditError, match="busy on one call"):
            await store.ping()
    finally:
        release.set()
        await blocker


async def test_the_service_answers_503_within_the_budget_when_the_lock_is_held(audit_dsn: str) -> None:
    async with running_client(app_for(audit_dsn)) as client:
        assert (await client.post("/cds-services/stub", json=request_body())).status_code == 200
        with chain_lock_held(audit_dsn):
            started = time.monotonic()
            answer = await client.post("/cds-services/stub", json=request_body())
            elapsed = time.monotonic() - started
            ready = await client.get("/readyz")
    print(f"\ntime to 503 with a stuck lock holder [{audit_dsn.split(':')[0]}]: {elapsed:.2f} s")
    assert answer.status_code == 503
    assert "cards" not in answer.text
    assert elapsed < 3.5
    assert ready.status_code == 200  # the store is reachable; only the chain lock is held


def test_sqlite_has_one_short_busy_timeout(tmp_path: object) -> None:
    from pathlib import Path

    log = SqliteAuditLog(Path(str(tmp_path)) / "a.sqlite3", TEST_KEY)
    log.open()
    try:
        assert log._execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT_S * 1000)
    finally:
        log.close()


# --------------------------------------------------------------------------- PostgreSQL session settings


@pytest.mark.postgres
def test_postgres_connections_bound_every_wait(pg_dsn: str) -> None:
    log = open_audit_log(pg_dsn, TEST_KEY)
    log.open()
    try:
        settings = {name: log._execute(f"SHOW {name}").fetchone()[0] for name in (
            "lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout", "synchronous_commit",
            "default_transaction_isolation")}
        with log._transaction(chain=True):
            isolation = log._execute("SHOW transaction_isolation").fetchone()[0]
    finally:
        log.close()
    assert settings == {"lock_timeout": "2s", "statement_timeout": "5s",
                        "idle_in_transaction_session_timeout": "10s", "synchronous_commit": "on",
                        "default_transaction_isolation": "read committed"}
    assert isolation == "read committed"


@pytest.fixture
def repeatable_read_dsn() -> Iterator[str]:
    """A database whose default isolation is REPEATABLE READ (review finding 4)."""
    name = f"calcinosis_rr_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")  # type: ignore[arg-type]
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.mark.postgres
def test_concurrent_appends_succeed_under_a_repeatable_read_default(repeatable_read_dsn: str) -> None:
    with psycopg.connect(repeatable_read_dsn) as probe:
        assert probe.execute("SHOW default_transaction_isolation").fetchone() == ("repeatable read",)
    first = open_audit_log(repeatable_read_dsn, TEST_KEY)
    first.open()  # migrates
    writers, per_writer, failures = 4, 30, []

    def write(tenant: str) -> None:
        log = open_audit_log(repeatable_read_dsn, TEST_KEY)
        log.open()
        try:
            for _ in range(per_writer):
                try:
                    log.append_call(call_record(tenant=tenant))
                except AuditError as error:
                    failures.append(str(error))
        finally:
            log.close()

    threads = [threading.Thread(target=write, args=(f"t{index}",)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert failures == []
        verdict = first.verify()
        assert verdict.ok, verdict.describe()
        assert verdict.records == writers * per_writer
    finally:
        first.close()
