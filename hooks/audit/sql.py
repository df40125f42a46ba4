"""The durable audit log shared by the SQLite and PostgreSQL backends (security brief §3.3, §3.4, §1.6).

``AuditLog`` is synchronous: the auditor's CLI uses it as is, and the service reaches it through
``SqlAuditStore`` (``hooks.audit.sql_store``), which runs every call on one dedicated thread so that
sqlite3/psycopg never block the event loop. Each append is one transaction that takes the chain's write lock
(SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock``), reads the head, and inserts the next link,
so several writers (service instances, the CLI's access rows) still produce one valid chain. The tamper
checks around each append live in ``hooks.audit.integrity``.
"""

from __future__ import annotations

import getpass
import hmac
import socket
import uuid
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hooks.audit.chain import GENESIS, ROW_COLUMNS, ChainVerdict, Checkpoint, chain_hash, verify_rows
from hooks.audit.codec import (
    FeedbackLink,
    RowKind,
    access_row,
    call_from_document,
    call_row,
    column_text,
    feedback_row,
    utc_iso,
)
from hooks.audit.integrity import ChainIntegrity, Clock, utc_now
from hooks.audit.records import FeedbackRecord, HookCallRecord
from hooks.audit.schema import (
    CARD_INDEX_INSERT,
    DEFAULT_CHECKPOINT_EVERY,
    PAGE,
    SCHEMA_VERSION,
    Migration,
    StoredRow,
    read_checkpoint_file,
    within,
)
from hooks.audit.store import AuditError, AuditIntegrityError, FeedbackResult

__all__ = ["AuditLog", "StoredRow"]

# Rows of seen_jti outlive their token by this much: a clock a little behind must not reopen a replay window.
_JTI_GRACE_S = 300.0
_JTI_PURGE_EVERY = 128


def _encoded_call(record: HookCallRecord) -> tuple[StoredRow, list[str | None]]:
    card_uuids = dict.fromkeys(
        column_text(card["uuid"]) for card in record.cards if isinstance(card, dict) and card.get("uuid")
    )
    return call_row(record), list(card_uuids)


def _card_index_rows(row: StoredRow, seq: int, card_uuids: list[str | None]) -> list[tuple[Any, ...]]:
    return [(card_uuid, seq, row["hook_instance"], row["service_id"], row["patient_ref"], row["iss"], row["tenant"])
            for card_uuid in card_uuids]


class AuditLog(ChainIntegrity):
    """One audit database. Not thread-safe: one thread at a time (``SqlAuditStore`` guarantees it)."""

    backend: str = "sql"

    def __init__(self, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_file: Path | None = None, clock: Clock = utc_now) -> None:
        super().__init__(key, checkpoint_every=checkpoint_every, checkpoint_file=checkpoint_file, clock=clock)
        self._jti_calls = 0

    # ------------------------------------------------------------------ backend specifics

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

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
                    (version, utc_iso(self._clock())),
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

    def append_call(self, record: HookCallRecord) -> int:
        with self._chain_write():
            return self._insert_call(*_encoded_call(record))

    def append_calls(self, records: Sequence[HookCallRecord]) -> list[int | AuditError]:
        """Group commit (issue 14, docs/decisions.md): every record in one chain transaction, so one COMMIT
        (one fsync) for all. Each record gets its ``seq``, or the ``AuditError`` that stopped it: a record that
        cannot be encoded fails alone, before the transaction; a failed transaction fails every record in it."""
        results: list[int | AuditError] = []
        encoded: list[tuple[int, StoredRow, list[str | None]]] = []
        for record in records:
            try:
                with self._guard("append"):
                    encoded.append((len(results), *_encoded_call(record)))
                results.append(0)
            except AuditError as error:
                results.append(error)
        if encoded:
            with self._chain_write():
                # Fewer round trips (PostgreSQL): the links are computed in order, then every audit_log row is
                # sent in one statement and every card_index row in another, inside the same transaction.
                index_rows: list[tuple[Any, ...]] = []
                for index, row, card_uuids in encoded:
                    results[index] = seq = self._append(row, defer=True)
                    index_rows.extend(_card_index_rows(row, seq, card_uuids))
                self._insert_deferred()
                if index_rows:
                    self._execute_many(CARD_INDEX_INSERT, index_rows)
        return results

    def _insert_call(self, row: StoredRow, card_uuids: list[str | None]) -> int:
        seq = self._append(row)
        for params in _card_index_rows(row, seq, card_uuids):
            self._execute(CARD_INDEX_INSERT, params)
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
        now = self._clock()
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
            return self._append(access_row(record_id, now, document, filters.get("patient"),
                                           filters.get("hook_instance")))

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        # The injected clock, like every other time this log writes: purging follows the same "now".
        now = self._clock().timestamp()
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
        within(where, params, since, until)
        if patient is not None:
            where.append("patient_ref = ?")
            params.append(column_text(patient))
        if hook_instance is not None:
            where.append("hook_instance = ?")
            params.append(column_text(hook_instance))
        columns = (*ROW_COLUMNS, "hash")
        # Only fixed fragments and placeholders are joined here; every value travels as a parameter.
        sql = f"SELECT {', '.join(columns)} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq LIMIT {PAGE}"  # noqa: S608
        after = from_seq - 1
        while True:
            with self._guard("read"):
                page = self._rows(sql, (after, *params))
            for values in page:
                yield dict(zip(columns, values, strict=True))
            if len(page) < PAGE:
                return
            after = int(page[-1][0])

    def find_calls(self, hook_instance: str, received_at: datetime) -> list[HookCallRecord]:
        """The call records of ``hook_instance`` received at ``received_at``, read back for the assessment page.

        Each row's link is checked before it is returned (HMAC over the previous hash and the row, as
        ``verify`` does): a record edited in the database raises ``AuditIntegrityError`` and is never shown."""
        wanted = utc_iso(received_at)
        found = []
        for row in self.rows(kinds=["call"], hook_instance=hook_instance):
            if row["occurred_at"] != wanted:
                continue
            seq = int(row["seq"])
            previous = self.hash_at(seq - 1) if seq > 1 else GENESIS.hex()
            computed = chain_hash(self._key, bytes.fromhex(previous), row).hex() if previous else ""
            if not hmac.compare_digest(computed, str(row["hash"])):
                raise AuditIntegrityError(f"the audit record at seq {seq} does not verify against the chain")
            with self._guard("read"):
                found.append(call_from_document(row["document"]))
        return found

    def seq_span(self, since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
        """First and last ``seq`` recorded in a period. Rows commit in ``seq`` order but carry the time the
        request arrived, so near the period's edges the two orders can differ by a few rows."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        within(where, params, since, until)
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
