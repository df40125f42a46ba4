"""PostgreSQL audit backend, for several service instances sharing one store (security brief §3.4, §1.6).

Every chain append runs ``pg_advisory_xact_lock`` inside its insert transaction: instances queue on the
lock, each reads the head the previous one committed, so the chain stays a single line. Row triggers
refuse UPDATE/DELETE, a statement trigger refuses TRUNCATE, and docs/audit.md gives the role without
those privileges.

Each connection sets, whatever the server or database defaults say: ``lock_timeout`` (a lock holder that
never lets go costs one bounded wait, then AuditError), ``statement_timeout``,
``idle_in_transaction_session_timeout``, ``synchronous_commit = on`` (what makes a commit durable) and
READ COMMITTED (under REPEATABLE READ a writer queued on the lock would read a stale head and collide on
``seq``); TCP keepalives and ``tcp_user_timeout`` notice a dead server or network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from hooks.audit.integrity import Clock, utc_now
from hooks.audit.schema import DEFAULT_CHECKPOINT_EVERY, Migration, checkpoint_schema, core_schema
from hooks.audit.sql import AuditLog
from hooks.audit.store import AuditError

__all__ = ["CHAIN_LOCK", "LOCK_TIMEOUT_S", "PostgresAuditLog", "least_privilege_grants"]

LOCK_TIMEOUT_S = 2.0
STATEMENT_TIMEOUT_S = 5.0
IDLE_IN_TRANSACTION_TIMEOUT_S = 10.0
# libpq parameters, used unless the DSN sets them itself.
_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged writes to a dead peer fail instead of hanging
}

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
_V2 = [*checkpoint_schema("BIGINT"), *_append_only("checkpoint")]


def least_privilege_grants(schema: str = "public", app: str = "calcinosis_app",
                           auditor: str = "calcinosis_auditor") -> list[str]:
    """GRANTs for the service and auditor roles (docs/audit.md "PostgreSQL roles"); the tables stay owned
    by the role that ran the migration, which never runs on the service hosts.

    Without UPDATE, DELETE or TRUNCATE the database refuses a change before the triggers are even reached,
    and without ownership neither role can drop the triggers.
    """
    tables = "audit_log, card_index, checkpoint, seen_jti, schema_version"
    return [
        f"REVOKE ALL ON {tables} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {app}, {auditor}",
        f"GRANT SELECT, INSERT ON audit_log, card_index, checkpoint TO {app}",
        f"GRANT SELECT ON schema_version TO {app}",
        # seen_jti is a replay cache, not audit: expired ids are purged.
        f"GRANT SELECT, INSERT, DELETE ON seen_jti TO {app}",
        f"GRANT SELECT ON audit_log, card_index, checkpoint, schema_version TO {auditor}",
        # The auditor's CLI appends an access row before it shows anything (BALP); that row may be the one
        # that completes a checkpoint interval.
        f"GRANT INSERT ON audit_log, checkpoint TO {auditor}",
    ]


class PostgresAuditLog(AuditLog):
    backend = "postgresql"

    def __init__(self, dsn: str, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_file: Path | None = None, lock_timeout_s: float = LOCK_TIMEOUT_S,
                 statement_timeout_s: float = STATEMENT_TIMEOUT_S, clock: Clock = utc_now) -> None:
        super().__init__(key, checkpoint_every=checkpoint_every, checkpoint_file=checkpoint_file, clock=clock)
        self._dsn = dsn
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None
        self.lock_timeout_s = lock_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self._identity: str | None = None

    def _new_connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        given = conninfo_to_dict(self._dsn)
        options = {name: value for name, value in _CONNECT_DEFAULTS.items() if name not in given}
        connection = psycopg.connect(self._dsn, autocommit=True, **options)
        try:
            # psycopg then opens every transaction with BEGIN ISOLATION LEVEL READ COMMITTED.
            connection.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            for setting, value in (
                ("lock_timeout", f"{int(self.lock_timeout_s * 1000)}ms"),
                ("statement_timeout", f"{int(self.statement_timeout_s * 1000)}ms"),
                ("idle_in_transaction_session_timeout", f"{int(IDLE_IN_TRANSACTION_TIMEOUT_S * 1000)}ms"),
                ("synchronous_commit", "on"),
                ("default_transaction_isolation", "read committed"),
            ):
                connection.execute("SELECT set_config(%s, %s, false)", (setting, value))
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect(self) -> None:
        if self._connection is not None and not self._connection.closed:
            return
        self._connection = self._new_connection()
        if self._identity is None:
            found = self._connection.execute("SELECT current_database() || '/' || current_schema()").fetchone()
            self._identity = str(found[0]) if found else None

    def database_identity(self) -> str | None:
        return self._identity

    def _session_identity(self) -> dict[str, Any]:
        found = self._execute("SELECT session_user::text, inet_client_addr()::text").fetchone()
        return {"db_user": found[0], "client_addr": found[1] or "local socket"}

    def _migration_timeouts(self) -> None:
        # Instances starting together queue on the chain lock while one of them migrates.
        self._execute("SELECT set_config('lock_timeout', '60s', true), set_config('statement_timeout', '0', true)")

    def probe(self) -> None:
        try:
            with psycopg.connect(self._dsn, autocommit=True, **{**_CONNECT_DEFAULTS, "connect_timeout": 2}) as probe:
                probe.execute("SELECT set_config('statement_timeout', '2s', false)")
                probe.execute("SELECT MAX(version) FROM schema_version").fetchall()
        except psycopg.Error as error:
            raise AuditError(f"audit ping failed: {type(error).__name__}") from error

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

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # psycopg pipelines executemany: one round trip for every row.
        with self._live().cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), [tuple(params) for params in rows])

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
        return [(1, _V1), (2, _V2)]

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)
