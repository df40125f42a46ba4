"""The durable audit log shared by the SQLite and PostgreSQL backends (security brief §3.3, §3.4, §1.6).

``AuditLog`` is synchronous: the auditor's CLI uses it as is, and the service reaches it through
``SqlAuditStore``, which runs every call on one dedicated thread so that sqlite3/psycopg never block
the event loop. Each append is one transaction that takes the chain's write lock (SQLite
``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock``), reads the head, and inserts the next link, so
several writers (service instances, the CLI's access rows) still produce one valid chain.

Every call is bounded: the backends give up a lock wait after about 2 s, ``SqlAuditStore`` answers
``AuditError`` (the app's 503) after its budget (3 s by default) and refuses new calls beyond a queue
limit. A record committed after its caller gave up is "audited but not sent", the safe direction.

Truncation (deleting the newest rows) cannot break the links that remain, so each store instance keeps
the last ``(seq, hash)`` it wrote and refuses to extend a chain whose head fell behind it, and heads are
checkpointed every ``checkpoint_every`` appends into the ``checkpoint`` table and a file off the database.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from hooks.audit.chain import GENESIS, ROW_COLUMNS, ChainVerdict, Checkpoint, chain_hash, verify_rows
from hooks.audit.codec import (
    FeedbackLink,
    RowKind,
    access_row,
    call_row,
    column_text,
    feedback_row,
    utc_iso,
)
from hooks.audit.records import FeedbackRecord, HookCallRecord
from hooks.audit.store import AuditError, FeedbackResult

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_TIMEOUT_S",
    "SCHEMA_VERSION",
    "AuditLog",
    "Migration",
    "SqlAuditStore",
    "StoredRow",
    "checkpoint_schema",
    "core_schema",
    "read_checkpoint_file",
]

log = logging.getLogger("hooks.audit")

# Bumped with every entry appended to a backend's ``migrations()``; a database newer than the code is refused.
SCHEMA_VERSION = 2
# Budget of one store call as the service sees it: shorter than an EHR's own timeout (typically 5-10 s),
# so the EHR gets our 503 rather than its own timeout.
DEFAULT_TIMEOUT_S = 3.0
# Calls waiting for the worker thread beyond this are refused at once (AuditError) instead of queueing.
DEFAULT_MAX_PENDING = 64
DEFAULT_CHECKPOINT_EVERY = 100
# Opening may migrate the schema, which waits for other instances doing the same.
_OPEN_TIMEOUT_S = 60.0
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


def checkpoint_schema(big_integer: str) -> list[str]:
    """Migration 2: heads recorded every ``checkpoint_every`` appends (append-only, like ``audit_log``)."""
    return [
        f"""CREATE TABLE checkpoint (
            seq {big_integer} PRIMARY KEY,
            hash TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
    ]


def read_checkpoint_file(path: Path, database: str | None = None) -> list[Checkpoint]:
    """Checkpoints from a JSON-lines file written by ``AuditLog`` (lines of another database are skipped).

    A line that does not parse is skipped: the file is evidence, never trusted to extend the chain, and a
    forged line can only cause a false alarm.
    """
    found: list[Checkpoint] = []
    try:
        with path.open("rb") as handle:
            for line in handle:
                try:
                    item = orjson.loads(line)
                    if item.get("database") != database:
                        continue
                    found.append(Checkpoint(int(item["seq"]), str(item["hash"]).lower(), str(item.get("at", "")),
                                            f"checkpoint file {path.name}"))
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue
    except FileNotFoundError:
        return []
    return found


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

    def __init__(self, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_file: Path | None = None) -> None:
        if not key:
            raise AuditError("the audit chain needs a non-empty key (CDS_AUDIT_KEY)")
        self._key = key
        self._jti_calls = 0
        self.checkpoint_every = checkpoint_every
        self.checkpoint_file = checkpoint_file
        # The last (seq, hash) this instance committed (or found valid at its first write): the database
        # head must never fall behind it, nor its hash change.
        self._last: tuple[int, str] | None = None
        self._unchecked = 0  # appends since the last checkpoint this instance wrote
        self._tx_last: tuple[int, str] | None = None
        self._tx_checkpoint = False

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

    @abstractmethod
    def probe(self) -> None:
        """Readiness check on a short-lived connection of its own (never queues behind appends); may run
        on another thread than every other method. Raise AuditError when the store is unreachable."""

    def database_identity(self) -> str | None:
        """Which database a checkpoint-file line belongs to, when one file may serve several (PostgreSQL)."""
        return None

    def _session_identity(self) -> dict[str, Any]:
        """Who the database says is connected, for audit-access rows (the OS user is only a claim)."""
        return {}

    def _migration_timeouts(self) -> None:
        """Inside the migration transaction: relax the per-statement limits (DDL may wait for other instances)."""
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
        except (TypeError, ValueError) as error:
            # A record that cannot be encoded (or a stored value that cannot be decoded) is an audit failure
            # like any other: 503, never an unhandled 500 without a record.
            raise AuditError(f"audit {action} failed: {type(error).__name__} encoding the record") from error

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
            self._migration_timeouts()
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

    def _refuse(self, why: str) -> AuditError:
        log.error("audit chain refused: %s", why)
        return AuditError(f"audit chain refused: {why}")

    def _head_row(self) -> tuple[int, str]:
        head = self._rows("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(head[0][0]), str(head[0][1])) if head else (0, GENESIS.hex())

    def _stored_hash(self, seq: int) -> str | None:
        found = self._rows("SELECT hash FROM audit_log WHERE seq = ?", (seq,))
        return str(found[0][0]) if found else None

    def _check_anchor(self, head_seq: int, anchor: Checkpoint) -> None:
        if anchor.seq > head_seq:
            raise self._refuse(
                f"the chain ends at seq {head_seq} but {anchor.source} recorded seq {anchor.seq}: the newest "
                "records were deleted; run 'calcinosis-cds audit verify' and see docs/audit.md \"Checkpoints\""
            )
        if anchor.seq > 0 and self._stored_hash(anchor.seq) != anchor.hash:
            raise self._refuse(
                f"seq {anchor.seq} no longer has the hash {anchor.source} recorded: the chain was rewritten"
            )

    def _validate_head(self, head_seq: int, head_hash: str) -> None:
        """First write of this instance: the head must be ours to extend. Its HMAC must verify with our key
        (a wrong CDS_AUDIT_KEY would otherwise fork the chain unnoticed) and no checkpoint may lie beyond it."""
        if head_seq > 0:
            columns = (*ROW_COLUMNS, "hash")
            found = self._rows(
                f"SELECT {', '.join(columns)} FROM audit_log WHERE seq IN (?, ?) ORDER BY seq",  # noqa: S608
                (head_seq - 1, head_seq),
            )
            rows = [dict(zip(columns, values, strict=True)) for values in found]
            if len(rows) != min(head_seq, 2):
                raise self._refuse(f"seq {head_seq - 1}, just before the head, is missing")
            previous = bytes.fromhex(rows[0]["hash"]) if head_seq > 1 else GENESIS
            computed = chain_hash(self._key, previous, rows[-1]).hex()
            if not hmac.compare_digest(computed, str(rows[-1]["hash"])):
                raise self._refuse(
                    f"the HMAC of the head (seq {head_seq}) does not verify: CDS_AUDIT_KEY is not the key "
                    "that wrote this chain, or the head was edited"
                )
        for anchor in self._latest_checkpoints():
            self._check_anchor(head_seq, anchor)

    def _latest_checkpoints(self) -> list[Checkpoint]:
        latest: list[Checkpoint] = []
        found = self._rows("SELECT seq, hash, at FROM checkpoint ORDER BY seq DESC LIMIT 1")
        if found:
            latest.append(Checkpoint(int(found[0][0]), str(found[0][1]), str(found[0][2]), "the checkpoint table"))
        if self.checkpoint_file is not None:
            in_file = read_checkpoint_file(self.checkpoint_file, self.database_identity())
            if in_file:
                latest.append(max(in_file, key=lambda anchor: anchor.seq))
        return latest

    def _check_continuity(self, head_seq: int, head_hash: str) -> None:
        if self._last is None:
            self._validate_head(head_seq, head_hash)
            return
        last_seq, last_hash = self._last
        self._check_anchor(head_seq, Checkpoint(last_seq, last_hash, source="this instance's last write"))

    def check_head(self) -> tuple[int, str]:
        """Validate the head as the first write would (service start-up), and remember it."""
        with self._guard("open"):
            head = self._head_row()
            self._check_continuity(*head)
            if self._last is None:
                self._last = head
            return head

    def _head_and_last(self, last: tuple[int, str]) -> tuple[int, str]:
        """The head, checked against this instance's last write in the same round trip."""
        found = self._rows(
            "SELECT seq, hash FROM audit_log WHERE seq IN ((SELECT MAX(seq) FROM audit_log), ?)", (last[0],)
        )
        by_seq = {int(seq): str(digest) for seq, digest in found}
        head_seq = max(by_seq, default=0)
        head_hash = by_seq.get(head_seq, GENESIS.hex())
        if head_seq < last[0]:
            self._check_anchor(head_seq, Checkpoint(*last, source="this instance's last write"))
        if by_seq.get(last[0]) != last[1]:
            raise self._refuse(f"seq {last[0]} no longer has the hash this instance's last write recorded: "
                               "the chain was rewritten")
        return head_seq, head_hash

    def _append(self, row: StoredRow) -> int:
        if self._tx_last is not None:  # a later link of this transaction: the head is our own insert
            head_seq, head_hash = self._tx_last
        elif self._last is not None and self._last[0] > 0:
            head_seq, head_hash = self._head_and_last(self._last)
        else:  # first write of this instance (or onto an empty chain)
            head_seq, head_hash = self._head_row()
            self._check_continuity(head_seq, head_hash)
        seq, previous = head_seq + 1, bytes.fromhex(head_hash)
        row["seq"] = seq
        row["hash"] = chain_hash(self._key, previous, row).hex()
        self._execute(_INSERT, [row[column] for column in (*ROW_COLUMNS, "hash")])
        self._tx_last = (seq, row["hash"])
        if self.checkpoint_every > 0 and seq % self.checkpoint_every == 0:
            self._tx_checkpoint = True
        return seq

    def _insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._execute(
            "INSERT INTO checkpoint (seq, hash, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (checkpoint.seq, checkpoint.hash, checkpoint.at),
        )

    def _write_checkpoint_file(self, checkpoint: Checkpoint) -> None:
        """One JSON line, appended and fsynced; never follows a symlink. A failure is logged, not raised:
        the rows are already committed and the database checkpoint written."""
        if self.checkpoint_file is None:
            return
        line: dict[str, Any] = {"seq": checkpoint.seq, "hash": checkpoint.hash, "at": checkpoint.at}
        database = self.database_identity()
        if database is not None:
            line["database"] = database
        try:
            self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(self.checkpoint_file,
                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(descriptor, orjson.dumps(line) + b"\n")
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            log.error("audit checkpoint file %s not written: %s", self.checkpoint_file, type(error).__name__)

    @contextmanager
    def _chain_write(self) -> Iterator[None]:
        """One chain transaction: continuity check at its first link, checkpoint if it crossed a multiple of
        ``checkpoint_every``, and ``_last`` moved only once it committed."""
        self._tx_last, self._tx_checkpoint = None, False
        try:
            checkpoint: Checkpoint | None = None
            with self._guard("append"), self._transaction(chain=True):
                yield
                if self._tx_checkpoint and self._tx_last is not None:
                    checkpoint = Checkpoint(*self._tx_last, utc_iso(datetime.now(UTC)))
                    self._insert_checkpoint(checkpoint)
            if self._tx_last is not None:
                self._last = self._tx_last
                self._unchecked += 1
            if checkpoint is not None:
                self._unchecked = 0
                self._write_checkpoint_file(checkpoint)
        finally:
            self._tx_last, self._tx_checkpoint = None, False

    def checkpoint(self) -> Checkpoint | None:
        """Record this instance's last write as a checkpoint now (graceful shutdown); None if nothing new."""
        if self._last is None or self._unchecked == 0 or self._last[0] == 0:
            return None
        checkpoint = Checkpoint(*self._last, utc_iso(datetime.now(UTC)))
        with self._guard("checkpoint"), self._transaction(chain=False):
            if self._stored_hash(checkpoint.seq) != checkpoint.hash:
                raise self._refuse(f"seq {checkpoint.seq} changed since this instance wrote it")
            self._insert_checkpoint(checkpoint)
        self._unchecked = 0
        self._write_checkpoint_file(checkpoint)
        return checkpoint

    def append_call(self, record: HookCallRecord) -> int:
        with self._chain_write():
            row = call_row(record)
            card_uuids = dict.fromkeys(
                column_text(card["uuid"]) for card in record.cards if isinstance(card, dict) and card.get("uuid")
            )
            seq = self._append(row)
            for card_uuid in card_uuids:
                self._execute(
                    _CARD_INDEX,
                    (card_uuid, seq, row["hook_instance"], row["service_id"], row["patient_ref"], row["iss"],
                     row["tenant"]),
                )
        return seq

    def _link(self, record: FeedbackRecord) -> tuple[FeedbackLink, str | None]:
        shown = self._rows(
            "SELECT hook_instance, patient_ref, iss, tenant FROM card_index "
            "WHERE card_uuid = ? AND service_id = ? ORDER BY seq DESC",
            (column_text(record.card_uuid), column_text(record.service_id)),
        )
        caller = (column_text(record.iss), column_text(record.tenant))
        for hook_instance, patient_ref, iss, tenant in shown:
            if (iss, tenant) == caller:
                record.hook_instance = hook_instance
                return "linked", patient_ref
        record.hook_instance = None
        return ("other-caller" if shown else "unknown-card"), None

    def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        stored = 0
        with self._chain_write():
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
        so a read cannot escape the log by failing half way; no access row, no output.

        ``os_user``/``host`` are what the process claims; on PostgreSQL ``db_user`` (``session_user``) and
        ``client_addr`` are what the server authenticated."""
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
        with self._chain_write():
            document.update(self._session_identity())
            return self._append(access_row(record_id, now, document, filters.get("patient")))

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        now = time.time()
        iss, jti = column_text(iss) or "", column_text(jti) or ""
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
            params.append(column_text(patient))
        if hook_instance is not None:
            where.append("hook_instance = ?")
            params.append(column_text(hook_instance))
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
            return self._head_row()

    def hash_at(self, seq: int) -> str | None:
        with self._guard("read"):
            return self._stored_hash(seq)

    def checkpoints(self, files: Iterable[Path] = ()) -> list[Checkpoint]:
        """Every checkpoint this log can read: the ``checkpoint`` table, its own file, and ``files``."""
        with self._guard("read"):
            found = [Checkpoint(int(seq), str(digest), str(at), "the checkpoint table")
                     for seq, digest, at in self._rows("SELECT seq, hash, at FROM checkpoint ORDER BY seq")]
        paths = [*([self.checkpoint_file] if self.checkpoint_file is not None else []), *files]
        for path in dict.fromkeys(paths):
            found.extend(read_checkpoint_file(path, self.database_identity()))
        return found

    def verify(self, extra: Iterable[Checkpoint] = (), files: Iterable[Path] = ()) -> ChainVerdict:
        """Walk the whole chain and compare it with every readable checkpoint: a chain shorter than a
        checkpoint, or with another hash at its seq, is tampering even when every link holds."""
        return verify_rows(self._key, self.rows(), checkpoints=[*self.checkpoints(files), *extra])


class SqlAuditStore:
    """The ``AuditStore`` the service uses: an ``AuditLog`` behind one dedicated worker thread.

    One thread, not a pool: appends are serialised by the chain lock anyway, and a single thread keeps
    the sqlite3/psycopg connection on the thread that uses it. Every call is bounded by ``timeout_s``
    (``AuditError`` after it; a call still queued then never runs) and at most ``max_pending`` calls may
    wait for the thread. ``ping`` runs ``AuditLog.probe`` on a thread and connection of its own, so a stuck
    append never makes /readyz hang, and it fails while the writer has been stuck longer than the budget.
    """

    def __init__(self, log: AuditLog, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if timeout_s <= 0 or max_pending < 1:
            raise ValueError("timeout_s must be positive and max_pending at least 1")
        self.log = log
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._pinger: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._busy_since: float | None = None

    def _call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._busy_since = time.monotonic()
        try:
            return function(*args)
        finally:
            self._busy_since = None

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def _run(self, function: Callable[..., T], *args: Any, budget_s: float | None = None) -> T:
        executor = self._executor
        if executor is None:
            raise AuditError("the audit store is not open")
        with self._lock:
            if self._pending >= self.max_pending:
                log.error("audit queue full (%d calls waiting): refusing %s", self._pending, function.__name__)
                raise AuditError(f"the audit store has {self._pending} calls waiting; refusing more")
            self._pending += 1
        try:
            future = executor.submit(self._call, function, args)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._pending -= 1
            raise AuditError("the audit store is not open") from None
        future.add_done_callback(self._done)
        budget = self.timeout_s if budget_s is None else budget_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError:
            future.cancel()  # still queued: it will not run; already running: it may commit late (not sent)
            log.error("audit %s did not finish within %.1f s", function.__name__, budget)
            raise AuditError(f"audit {function.__name__} did not finish within {budget:g} s") from None

    def _open_and_check(self) -> None:
        self.log.open()
        try:
            self.log.check_head()
        except BaseException:
            self.log.close()
            raise

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audit-{self.log.backend}")
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audit-ping-{self.log.backend}")
        try:
            await self._run(self._open_and_check, budget_s=max(self.timeout_s, _OPEN_TIMEOUT_S))
        except BaseException:
            self._shutdown(wait=False)
            raise

    def _shutdown(self, *, wait: bool) -> None:
        for executor in (self._executor, self._pinger):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)
        self._executor = self._pinger = None

    def _checkpoint_and_close(self) -> None:
        try:
            self.log.checkpoint()
        except AuditError:
            pass  # already logged; the chain check at the next start reports the cause
        finally:
            self.log.close()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._checkpoint_and_close)
        except AuditError:
            log.error("audit store did not close cleanly within %.1f s", self.timeout_s)
            self._shutdown(wait=False)
            return
        self._shutdown(wait=True)

    async def ping(self) -> None:
        busy_since, pinger = self._busy_since, self._pinger
        if pinger is None:
            raise AuditError("the audit store is not open")
        if busy_since is not None and time.monotonic() - busy_since > self.timeout_s:
            raise AuditError(f"the audit writer has been busy on one call for over {self.timeout_s:g} s")
        try:
            await asyncio.wait_for(asyncio.wrap_future(pinger.submit(self.log.probe)), self.timeout_s)
        except TimeoutError:
            raise AuditError(f"audit ping did not answer within {self.timeout_s:g} s") from None
        except RuntimeError:
            raise AuditError("the audit store is not open") from None

    async def append_call(self, record: HookCallRecord) -> None:
        await self._run(self.log.append_call, record)

    async def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        return await self._run(self.log.append_feedback, list(records))

    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        return await self._run(self.log.remember_jti, iss, jti, expires_at)

    async def verify(self) -> ChainVerdict:
        # An auditor's walk of the whole chain, not a request path: no per-call budget.
        return await self._run(self.log.verify, budget_s=24 * 3600.0)
