"""PostgreSQL audit backend, for several service instances sharing one store (security brief §3.4, §1.6).

Every chain append runs ``pg_advisory_xact_lock`` inside its insert transaction: instances queue on the
lock, each reads the head the previous one committed, so the chain stays a single line. Row triggers
refuse UPDATE/DELETE, a statement trigger refuses TRUNCATE, and docs/audit.md gives the role without
those privileges. ``synchronous_commit`` is left at its default (on), which is what makes a commit durable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from hooks.audit.sql import AuditLog, Migration, core_schema
from hooks.audit.store import AuditError

__all__ = ["CHAIN_LOCK", "PostgresAuditLog", "least_privilege_grants"]

# Advisory lock id ("calcaudt" in ASCII). Schema migration takes it too, so instances starting together
# queue and exactly one of them creates the tables.
CHAIN_LOCK = 0x63616C6361756474


def _append_only(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
    ]


_V1 = [
    *core_schema("BIGINT", "DOUBLE PRECISION"),
    """CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
    END
    $$""",
    *_append_only("audit_log"),
    *_append_only("card_index"),
]


def least_privilege_grants(schema: str = "public", app: str = "calcinosis_app",
                           auditor: str = "calcinosis_auditor") -> list[str]:
    """GRANTs for the service and auditor roles (docs/audit.md "PostgreSQL roles"); the tables stay owned
    by the role that ran the migration, which never runs on the service hosts.

    Without UPDATE, DELETE or TRUNCATE the database refuses a change before the triggers are even reached,
    and without ownership neither role can drop the triggers.
    """
    tables = "audit_log, card_index, seen_jti, schema_version"
    return [
        f"REVOKE ALL ON {tables} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {app}, {auditor}",
        f"GRANT SELECT, INSERT ON audit_log, card_index TO {app}",
        f"GRANT SELECT ON schema_version TO {app}",
        # seen_jti is a replay cache, not audit: expired ids are purged.
        f"GRANT SELECT, INSERT, DELETE ON seen_jti TO {app}",
        f"GRANT SELECT ON audit_log, card_index, schema_version TO {auditor}",
        # The auditor's CLI appends an access row before it shows anything (BALP).
        f"GRANT INSERT ON audit_log TO {auditor}",
    ]


class PostgresAuditLog(AuditLog):
    backend = "postgresql"

    def __init__(self, dsn: str, key: bytes) -> None:
        super().__init__(key)
        self._dsn = dsn
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None

    def _connect(self) -> None:
        if self._connection is not None and not self._connection.closed:
            return
        self._connection = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _on_driver_error(self, error: BaseException) -> None:
        # A lost server or a failover leaves the connection unusable; the next call opens a new one.
        if isinstance(error, psycopg.OperationalError):
            self.close()

    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connect()
        if self._connection is None:
            raise AuditError("the audit store is not open")
        return self._connection

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        # ``?`` placeholders are shared with SQLite; no SQL text here contains a literal question mark.
        if params:
            return self._live().execute(sql.replace("?", "%s"), tuple(params))
        return self._live().execute(sql)

    @contextmanager
    def _transaction(self, *, chain: bool) -> Iterator[None]:
        with self._live().transaction():
            if chain:
                self._execute("SELECT pg_advisory_xact_lock(?)", (CHAIN_LOCK,))
            yield

    def _table_exists(self, name: str) -> bool:
        # to_regclass follows search_path, like the unqualified names in every statement here.
        return bool(self._execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0])

    def migrations(self) -> Sequence[Migration]:
        return [(1, _V1)]

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)
