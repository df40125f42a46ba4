"""The durable audit log shared by the SQLite and PostgreSQL backends (security brief §3.3, §3.4, §1.6).

``AuditLog`` is synchronous: the auditor's CLI uses it as is, and the service reaches it through
``SqlAuditStore``, which runs every call on one dedicated thread so that sqlite3/psycopg never block
the event loop. Each append is one transaction that takes the chain's write lock (SQLite
``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock``), reads the head, and inserts the next link, so
several writers (service instances, the CLI's access rows) still produce one valid chain.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from hooks.audit.chain import GENESIS, ROW_COLUMNS, ChainVerdict, chain_hash, verify_rows
from hooks.audit.codec import (
    FeedbackLink,
    RowKind,
    access_row,
    call_row,
    feedback_row,
    utc_iso,
)
from hooks.audit.records import FeedbackRecord, HookCallRecord
from hooks.audit.store import AuditError, FeedbackResult

__all__ = ["SCHEMA_VERSION", "AuditLog", "Migration", "SqlAuditStore", "StoredRow", "core_schema"]

# Bumped with every entry appended to a backend's ``migrations()``; a database newer than the code is refused.
SCHEMA_VERSION = 1
# Rows of seen_jti outlive their token by this much: a clock a little behind must not reopen a replay window.
_JTI_GRACE_S = 300.0
_JTI_PURGE_EVERY = 128
_PAGE = 1000

StoredRow = dict[str, Any]
Migration = tuple[int, Sequence[str]]
T = TypeVar("T")

# Column names come from constants in this module, never from input.
_INSERT = "INSERT INTO audit_log ({}) VALUES ({})".format(  # noqa: S608
    ", ".join((*ROW_COLUMNS, "hash")), ", ".join("?" for _ in range(len(ROW_COLUMNS) + 1))
)
_CARD_INDEX = (
    "INSERT INTO card_index (card_uuid, seq, hook_instance, service_id, patient_ref, iss, tenant) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def core_schema(big_integer: str, real: str) -> list[str]:
    """Tables and indexes both backends share (migration 1); each adds its own append-only triggers.

    ``occurred_at`` is fixed-width UTC ISO 8601 text on both, so the hashed row is byte-identical
    whichever backend wrote it and an archive verifies without knowing where it came from.
    """
    return [
        f"""CREATE TABLE audit_log (
            seq {big_integer} PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('call', 'feedback', 'access')),
            record_id TEXT NOT NULL UNIQUE,
            occurred_at TEXT NOT NULL,
            service_id TEXT,
            hook TEXT,
            hook_instance TEXT,
            patient_ref TEXT,
            http_status INTEGER,
            iss TEXT,
            tenant TEXT,
            card_uuid TEXT,
            dedupe_key TEXT UNIQUE,
            document TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX audit_log_time ON audit_log (occurred_at)",
        "CREATE INDEX audit_log_patient ON audit_log (patient_ref, occurred_at)",
        "CREATE INDEX audit_log_service ON audit_log (service_id, occurred_at)",
        "CREATE INDEX audit_log_hook_instance ON audit_log (hook_instance)",
        "CREATE INDEX audit_log_status ON audit_log (http_status, occurred_at)",
        f"""CREATE TABLE card_index (
            card_uuid TEXT NOT NULL,
            seq {big_integer} NOT NULL REFERENCES audit_log (seq),
            hook_instance TEXT,
            service_id TEXT,
            patient_ref TEXT,
            iss TEXT,
            tenant TEXT,
            PRIMARY KEY (card_uuid, seq)
        )""",
        f"""CREATE TABLE seen_jti (
            iss TEXT NOT NULL,
            jti TEXT NOT NULL,
            expires_at {real} NOT NULL,
            PRIMARY KEY (iss, jti)
        )""",
        "CREATE INDEX seen_jti_expiry ON seen_jti (expires_at)",
    ]


def _within(where: list[str], params: list[Any], since: datetime | None, until: datetime | None) -> None:
    """``since`` inclusive, ``until`` exclusive, compared as the fixed-width UTC text ``occurred_at`` holds."""
    if since is not None:
        where.append("occurred_at >= ?")
        params.append(utc_iso(since))
    if until is not None:
        where.append("occurred_at < ?")
        params.append(utc_iso(until))


class AuditLog(ABC):
    """One audit database. Not thread-safe: one thread at a time (``SqlAuditStore`` guarantees it)."""

    backend: str = "sql"

    def __init__(self, key: bytes) -> None:
        if not key:
            raise AuditError("the audit chain needs a non-empty key (CDS_AUDIT_KEY)")
        self._key = key
        self._jti_calls = 0

    # ------------------------------------------------------------------ backend specifics

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement with ``?`` placeholders and return the driver cursor."""

    @abstractmethod
    def _transaction(self, *, chain: bool) -> AbstractContextManager[None]:
        """A write transaction; ``chain=True`` also serialises against every other chain writer."""

    @abstractmethod
    def migrations(self) -> Sequence[Migration]: ...

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]: ...

    def _on_driver_error(self, error: BaseException) -> None:
        """Hook for dropping a broken connection so the next call reconnects."""
        return None

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except AuditError:
            raise
        except self._driver_errors() as error:
            self._on_driver_error(error)
            # The driver message may quote parameters (patient refs); only its class leaves this module.
            raise AuditError(f"audit {action} failed: {type(error).__name__}") from error

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._execute(sql, params).fetchall()
        return rows

    def open(self) -> None:
        try:
            with self._guard("open"):
                self._connect()
                self._migrate()
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def _table_exists(self, name: str) -> bool: ...

    def _migrate(self) -> None:
        # Up to date: no DDL at all, so a least-privilege role (INSERT/SELECT only) can start the service.
        if self._table_exists("schema_version") and self._version() == SCHEMA_VERSION:
            return
        with self._transaction(chain=True):
            self._execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = self._version()
            if current > SCHEMA_VERSION:
                raise AuditError(
                    f"the audit database has schema version {current}, newer than this code ({SCHEMA_VERSION})"
                )
            for version, statements in self.migrations():
                if version <= current:
                    continue
                for statement in statements:
                    self._execute(statement)
                self._execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, utc_iso(datetime.now(UTC))),
                )

    def _version(self) -> int:
        version: int = self._rows("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0]
        return version

    def schema_version(self) -> int:
        with self._guard("read"):
            return self._version()

    def ping(self) -> None:
        with self._guard("ping"):
            self._rows("SELECT 1")

    # ------------------------------------------------------------------ appends

    def _append(self, row: StoredRow) -> int:
        head = self._rows("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        seq, previous = (int(head[0][0]) + 1, bytes.fromhex(head[0][1])) if head else (1, GENESIS)
        row["seq"] = seq
        row["hash"] = chain_hash(self._key, previous, row).hex()
        self._execute(_INSERT, [row[column] for column in (*ROW_COLUMNS, "hash")])
        return seq

    def append_call(self, record: HookCallRecord) -> int:
        row = call_row(record)
        card_uuids = dict.fromkeys(
            str(card["uuid"]) for card in record.cards if isinstance(card, dict) and card.get("uuid")
        )
        with self._guard("append"), self._transaction(chain=True):
            seq = self._append(row)
            for card_uuid in card_uuids:
                self._execute(
                    _CARD_INDEX,
                    (card_uuid, seq, record.hook_instance, record.service_id, record.patient_ref, record.iss,
                     record.tenant),
                )
        return seq

    def _link(self, record: FeedbackRecord) -> tuple[FeedbackLink, str | None]:
        shown = self._rows(
            "SELECT hook_instance, patient_ref, iss, tenant FROM card_index "
            "WHERE card_uuid = ? AND service_id = ? ORDER BY seq DESC",
            (record.card_uuid, record.service_id),
        )
        for hook_instance, patient_ref, iss, tenant in shown:
            if (iss, tenant) == (record.iss, record.tenant):
                record.hook_instance = hook_instance
                return "linked", patient_ref
        record.hook_instance = None
        return ("other-caller" if shown else "unknown-card"), None

    def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        stored = 0
        with self._guard("append"), self._transaction(chain=True):
            for record in records:
                link, patient_ref = self._link(record)
                row = feedback_row(record, link, patient_ref)
                if self._rows("SELECT 1 FROM audit_log WHERE dedupe_key = ?", (row["dedupe_key"],)):
                    continue
                self._append(row)
                stored += 1
        return FeedbackResult(stored=stored, duplicates=len(records) - stored)

    def append_access(self, action: str, filters: dict[str, Any]) -> int:
        """BALP: "Accessing the audit log is an auditable event". Written before any result is produced,
        so a read cannot escape the log by failing half way; no access row, no output."""
        record_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        document = {
            "record_id": record_id,
            "at": utc_iso(now),
            "action": action,
            "filters": filters,
            "os_user": getpass.getuser(),
            "host": socket.gethostname(),
        }
        with self._guard("append"), self._transaction(chain=True):
            return self._append(access_row(record_id, now, document, filters.get("patient")))

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        now = time.time()
        with self._guard("jti"), self._transaction(chain=False):
            self._jti_calls += 1
            if self._jti_calls % _JTI_PURGE_EVERY == 1:
                self._execute("DELETE FROM seen_jti WHERE expires_at < ?", (now - _JTI_GRACE_S,))
            else:
                self._execute(
                    "DELETE FROM seen_jti WHERE iss = ? AND jti = ? AND expires_at < ?",
                    (iss, jti, now - _JTI_GRACE_S),
                )
            cursor = self._execute(
                "INSERT INTO seen_jti (iss, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (iss, jti, expires_at.timestamp()),
            )
            return bool(cursor.rowcount == 1)

    # ------------------------------------------------------------------ reads

    def rows(
        self,
        *,
        kinds: Sequence[RowKind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        patient: str | None = None,
        hook_instance: str | None = None,
        to_seq: int | None = None,
        from_seq: int = 1,
    ) -> Iterator[StoredRow]:
        """Rows in ``seq`` order, fetched a page at a time so a large log never sits in memory."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = []
        if to_seq is not None:
            where.append("seq <= ?")
            params.append(to_seq)
        if kinds:
            where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            params.extend(kinds)
        _within(where, params, since, until)
        if patient is not None:
            where.append("patient_ref = ?")
            params.append(patient)
        if hook_instance is not None:
            where.append("hook_instance = ?")
            params.append(hook_instance)
        columns = (*ROW_COLUMNS, "hash")
        # Only fixed fragments and placeholders are joined here; every value travels as a parameter.
        sql = f"SELECT {', '.join(columns)} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq LIMIT {_PAGE}"  # noqa: S608
        after = from_seq - 1
        while True:
            with self._guard("read"):
                page = self._rows(sql, (after, *params))
            for values in page:
                yield dict(zip(columns, values, strict=True))
            if len(page) < _PAGE:
                return
            after = int(page[-1][0])

    def seq_span(self, since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
        """First and last ``seq`` recorded in a period. Rows commit in ``seq`` order but carry the time the
        request arrived, so near the period's edges the two orders can differ by a few rows."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        _within(where, params, since, until)
        with self._guard("read"):
            low, high = self._rows(
                f"SELECT MIN(seq), MAX(seq) FROM audit_log WHERE {' AND '.join(where)}", params  # noqa: S608
            )[0]
        return None if low is None else (int(low), int(high))

    def head(self) -> tuple[int, str]:
        with self._guard("read"):
            found = self._rows("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(found[0][0]), str(found[0][1])) if found else (0, GENESIS.hex())

    def hash_at(self, seq: int) -> str | None:
        with self._guard("read"):
            found = self._rows("SELECT hash FROM audit_log WHERE seq = ?", (seq,))
        return str(found[0][0]) if found else None

    def verify(self) -> ChainVerdict:
        return verify_rows(self._key, self.rows())


class SqlAuditStore:
    """The ``AuditStore`` the service uses: an ``AuditLog`` behind one dedicated worker thread.

    One thread, not a pool: appends are serialised by the chain lock anyway, and a single thread keeps
    the sqlite3/psycopg connection on the thread that uses it.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise AuditError("the audit store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audit-{self.log.backend}")
        await self._run(self.log.open)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self.log.close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def ping(self) -> None:
        await self._run(self.log.ping)

    async def append_call(self, record: HookCallRecord) -> None:
        await self._run(self.log.append_call, record)

    async def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        return await self._run(self.log.append_feedback, list(records))

    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        return await self._run(self.log.remember_jti, iss, jti, expires_at)

    async def verify(self) -> ChainVerdict:
        return await self._run(self.log.verify)
