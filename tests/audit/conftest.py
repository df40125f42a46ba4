"""Fixtures for the audit tests: one fresh store per test on each backend.

PostgreSQL tests never skip: if 127.0.0.1:5432 does not answer, the session database cannot be created
and every PostgreSQL test fails. Each session gets its own database and each test its own schema, so
parallel runs cannot see each other's chains.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hooks.audit import FeedbackRecord, FhirQuery, HookCallRecord, PrefetchKeyState
from hooks.audit.factory import open_audit_log
from hooks.audit.postgres_store import CHAIN_LOCK
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_KEY = b"test-audit-key"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = f"calcinosis_audit_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def audit_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'audit.sqlite3'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
def log(audit_dsn: str) -> Iterator[AuditLog]:
    opened = open_audit_log(audit_dsn, TEST_KEY)
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
async def store(audit_dsn: str) -> AsyncIterator[SqlAuditStore]:
    opened = SqlAuditStore(open_audit_log(audit_dsn, TEST_KEY))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# --------------------------------------------------------------------------- raw database access (the "attacker")


def raw_execute(dsn: str, *statements: str) -> None:
    """Run SQL outside the store, as someone with direct database access would."""
    if dsn.startswith("sqlite:"):
        connection = sqlite3.connect(dsn.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for statement in statements:
                connection.execute(statement)
        finally:
            connection.close()
        return
    with psycopg.connect(dsn, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement)  # type: ignore[arg-type]


def drop_triggers(dsn: str) -> None:
    for table in ("audit_log", "card_index", "checkpoint"):
        if dsn.startswith("sqlite:"):
            raw_execute(dsn, f"DROP TRIGGER {table}_no_update", f"DROP TRIGGER {table}_no_delete")
        else:
            raw_execute(dsn, f"DROP TRIGGER {table}_no_update_delete ON {table}",
                        f"DROP TRIGGER {table}_no_truncate ON {table}")


def dump_everything(dsn: str) -> str:
    """Every row of every table, as text (plus, for SQLite, the raw bytes of the file and its WAL)."""
    parts: list[str] = []
    if dsn.startswith("sqlite:"):
        path = Path(dsn.removeprefix("sqlite:///"))
        connection = sqlite3.connect(path)
        try:
            parts.extend(connection.iterdump())
        finally:
            connection.close()
        for file in path.parent.glob(path.name + "*"):
            parts.append(file.read_bytes().decode("latin-1"))
        return "\n".join(parts)
    with psycopg.connect(dsn, autocommit=True) as pg:
        tables = [row[0] for row in pg.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()]
        for table in tables:
            for row in pg.execute(f"SELECT t::text FROM {table} t").fetchall():  # type: ignore[arg-type]  # noqa: S608
                parts.append(str(row[0]))
    return "\n".join(parts)


# --------------------------------------------------------------------------- records


def call_record(**overrides: Any) -> HookCallRecord:
    """A record with every field set to a non-default value, so a round trip proves each one is kept."""
    hook_instance = str(uuid.uuid4())
    values: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "received_at": T0,
        "responded_at": T0 + timedelta(milliseconds=42),
        "latency_ms": 41.875,
        "service_id": "calcinosis-assessment",
        "hook": "patient-view",
        "hook_instance": hook_instance,
        "iss": "https://ehr.example.org",
        "tenant": "tenant-a",
        "jti": "jti-" + hook_instance[:8],
        "kid": "key-1",
        "alg": "ES384",
        "user_ref": "Practitioner/17",
        "patient_ref": "Patient/123",
        "encounter_ref": "Encounter/9",
        "fhir_server": "https://ehr.example.org/fhir",
        "prefetch": [
            PrefetchKeyState(key="patient", received="present", resources=1),
            PrefetchKeyState(key="observations", received="missing", resources=3, fetched=True, obtained=True),
            PrefetchKeyState(key="medications", received="operation-outcome", obtained=False),
        ],
        "queries": [
            FhirQuery(key="observations", resource_type="Observation",
                      query="Observation?patient=123&code=http://loinc.org|17861-6", status=200, count=3,
                      ms=12.5, outcome="ok"),
            FhirQuery(key="medications", resource_type="MedicationRequest",
                      query="MedicationRequest?patient=123", status=None, count=0, ms=800.0, outcome="timeout"),
        ],
        "token_use": "used",
        "input_digest": "ab" * 32,
        "facts_used": [{"fact": "calcium", "value": 2.9, "unit": "mmol/L", "date": "2026-11-01",
                        "source": "Observation/5"}],
        "rules_fired": ["C1", "R2"],
        "ruleset_version": "1.4.0",
        "ruleset_hash": "cd" * 32,
        "code_version": "0.1.0",
        "locale": "fr",
        # A card that offers a suggestion (it can be accepted) and a red flag (it can only be dismissed).
        "cards": [card("C1", "subtype", suggestions=("s1",)), card("R2", "red-flag", indicator="warning")],
        "http_status": 200,
        "reason_class": None,
    }
    values.update(overrides)
    return HookCallRecord(**values)


def card(rule: str, kind: str, indicator: str = "info", card_uuid: str | None = None,
         suggestions: tuple[str, ...] = ()) -> dict[str, Any]:
    """A card; each id in ``suggestions`` becomes an orderable suggestion with that uuid."""
    shown: dict[str, Any] = {
        "uuid": card_uuid or str(uuid.uuid4()),
        "summary": f"Consider work-up ({rule})",
        "indicator": indicator,
        "detail": "Calcium 2.9 mmol/L on 2026-11-01 (Observation/5).",
        "source": {"label": "Calcinosis rule set 1.4.0", "url": "https://example.org/rules"},
        "extension": {"calcinosis-cds": {"kind": kind, "rule": rule}},
    }
    if suggestions:
        shown["suggestions"] = [{"uuid": ident, "label": f"Order serum phosphate ({ident})"}
                                for ident in suggestions]
        shown["selectionBehavior"] = "any"
    return shown


def feedback(record: HookCallRecord, card_index: int = 0, **overrides: Any) -> FeedbackRecord:
    values: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "received_at": T0 + timedelta(minutes=5),
        "service_id": record.service_id,
        "card_uuid": record.cards[card_index]["uuid"],
        "outcome": "overridden",
        "outcome_timestamp": T0 + timedelta(minutes=4),
        "override_reason_system": "http://example.org/override",
        "override_reason_code": "not-relevant",
        "override_reason_display": "Not relevant",
        "override_comment": "seen by dermatology",
        "iss": record.iss,
        "tenant": record.tenant,
        "jti": "jti-feedback",
    }
    values.update(overrides)
    return FeedbackRecord(**values)


@contextmanager
def chain_lock_held(dsn: str) -> Iterator[None]:
    """Another session takes the chain's write lock and sits on it, idle in transaction (a stuck instance,
    an operator's psql)."""
    if dsn.startswith("sqlite:"):
        connection = sqlite3.connect(dsn.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.rollback()
            connection.close()
        return
    with psycopg.connect(dsn) as pg:
        pg.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
        try:
            yield
        finally:
            pg.rollback()
