"""PostgreSQL specifics: TRUNCATE is refused, and the documented least-privilege role can append but not
change anything (security brief §3.4 "Append-only"). Never skipped: PostgreSQL must be running."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from hooks.audit import AuditError
from hooks.audit.factory import open_audit_log
from hooks.audit.postgres_store import least_privilege_grants
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import PG_ADMIN, TEST_KEY, call_record, raw_execute

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_log(pg_dsn: str) -> Iterator[AuditLog]:
    log = open_audit_log(pg_dsn, TEST_KEY)
    log.open()
    yield log
    log.close()


@pytest.mark.parametrize("table", ["audit_log", "card_index"])
def test_truncate_is_refused(pg_log: AuditLog, pg_dsn: str, table: str) -> None:
    pg_log.append_call(call_record())
    with pytest.raises(psycopg.errors.RaiseException, match="append-only: TRUNCATE refused"):
        raw_execute(pg_dsn, f"TRUNCATE {table} CASCADE")
    assert pg_log.verify().records == 1


def test_postgres_dsn_scheme_alias_is_accepted(pg_dsn: str) -> None:
    log = open_audit_log(pg_dsn.replace("postgresql://", "postgres://", 1), TEST_KEY)
    log.open()
    log.close()


def test_an_unreachable_server_is_an_audit_error() -> None:
    log = open_audit_log("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1", TEST_KEY)
    with pytest.raises(AuditError, match="OperationalError"):
        log.open()


@pytest.fixture
def app_role(pg_dsn: str) -> Iterator[tuple[str, str]]:
    suffix = secrets.token_hex(4)
    app, auditor = f"calcinosis_app_{suffix}", f"calcinosis_auditor_{suffix}"
    schema = pg_dsn.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for role in (app, auditor):
            admin.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
    try:
        yield app, auditor
    finally:
        raw_execute(pg_dsn, f"DROP OWNED BY {app}, {auditor}")
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for role in (app, auditor):
                admin.execute(f"DROP ROLE {role}")  # type: ignore[arg-type]
        del schema


def test_the_documented_roles_append_but_never_change(pg_log: AuditLog, pg_dsn: str,
                                                      app_role: tuple[str, str]) -> None:
    app, auditor = app_role
    schema = pg_dsn.rsplit("%3D", 1)[1]
    raw_execute(pg_dsn, *least_privilege_grants(schema, app, auditor))
    as_app = pg_dsn.replace("postgres@", f"{app}@", 1)

    service = open_audit_log(as_app, TEST_KEY)
    service.open()  # schema already migrated by the owner: no DDL needed
    try:
        service.append_call(call_record())
        assert service.remember_jti("https://ehr.example.org", "j1", call_record().received_at)
    finally:
        service.close()
    for statement in ("UPDATE audit_log SET patient_ref = NULL", "DELETE FROM audit_log", "TRUNCATE audit_log",
                      "DROP TRIGGER audit_log_no_update_delete ON audit_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            raw_execute(as_app, statement)

    auditor_log = open_audit_log(pg_dsn.replace("postgres@", f"{auditor}@", 1), TEST_KEY)
    auditor_log.open()
    try:
        auditor_log.append_access("show", {"patient": "Patient/123"})
        assert auditor_log.verify().records == 2
        with pytest.raises(AuditError):
            auditor_log.append_call(call_record())  # card_index is not theirs to write
    finally:
        auditor_log.close()


async def test_a_dropped_connection_costs_one_503_then_the_store_reconnects(pg_dsn: str) -> None:
    store = SqlAuditStore(open_audit_log(pg_dsn, TEST_KEY))
    await store.open()
    try:
        await store.append_call(call_record())
        # A failover or server restart: every connection to the database is cut.
        database = pg_dsn.split("/")[-1].split("?")[0]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        with pytest.raises(AuditError):
            await store.append_call(call_record())
        await store.append_call(call_record())
        verdict = await store.verify()
        assert verdict.ok
        assert verdict.records == 2
    finally:
        await store.close()
