"""SQLite audit backend, the embedded default (security brief §3.4 "Append-only" and "Durability").

WAL with ``synchronous=FULL``: WAL alone survives an application crash, FULL also survives power loss
[S27]. ``BEGIN IMMEDIATE`` takes the write lock before the chain head is read, so the CLI's access rows
and the service never fork the chain. ``BEFORE UPDATE``/``BEFORE DELETE`` triggers refuse edits; someone
with the file can drop them, which is what the keyed chain is for.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hooks.audit.integrity import Clock, utc_now
from hooks.audit.schema import DEFAULT_CHECKPOINT_EVERY, Migration, checkpoint_schema, core_schema
from hooks.audit.sql import AuditLog
from hooks.audit.store import AuditError

__all__ = ["BUSY_TIMEOUT_S", "SqliteAuditLog", "checkpoint_file_for", "lock_file_for", "sqlite_path"]

# How long a write waits for another writer's lock before failing (AuditError, the app's 503). Well under
# the store's per-call budget, so a stuck writer (another process, the CLI) costs one bounded wait.
BUSY_TIMEOUT_S = 2.0


def sqlite_path(dsn: str) -> Path:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (the SQLAlchemy convention)."""
    if not dsn.startswith("sqlite:///"):
        raise AuditError("a SQLite audit DSN looks like sqlite:///data/audit.sqlite3")
    path = dsn.removeprefix("sqlite:///")
    if not path or path.startswith(":memory:"):
        raise AuditError("the audit store must be a file: an in-memory SQLite database is not durable")
    return Path(path)


def checkpoint_file_for(path: Path) -> Path:
    """The checkpoint file kept next to a SQLite database (``audit.sqlite3.checkpoints.jsonl``)."""
    return path.with_name(path.name + ".checkpoints.jsonl")


def lock_file_for(path: Path) -> Path:
    """The lock a serving instance holds on its SQLite database (``audit.sqlite3.lock``, holding its pid)."""
    return path.with_name(path.name + ".lock")


def _append_only(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


_V1 = [
    *core_schema("INTEGER", "REAL"),
    *_append_only("audit_log"),
    *_append_only("card_index"),
]
_V2 = [*checkpoint_schema("INTEGER"), *_append_only("checkpoint")]


class SqliteAuditLog(AuditLog):
    backend = "sqlite"

    def __init__(self, path: Path, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_file: Path | None = None, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 clock: Clock = utc_now, single_instance: bool = False) -> None:
        super().__init__(key, checkpoint_every=checkpoint_every,
                         checkpoint_file=checkpoint_file or checkpoint_file_for(path), clock=clock)
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        # The service's store: one serving instance per file (the CLI's short writes still share it).
        self.single_instance = single_instance
        self._connection: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    def _lock(self) -> None:
        """Hold an exclusive lock on ``audit.sqlite3.lock`` for as long as this store is open.

        SQLite keeps one chain correct with several writers, but the checkpoint file, the tail checks and
        the replay cache assume one serving instance; two would also fight for one file lock on every call.
        ``flock`` is released by the kernel when the process dies (kill -9 included), so no stale lock.
        """
        lock_path = lock_file_for(self.path)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise AuditError(
                f"another calcinosis-cds instance (pid {holder}) is serving the SQLite audit store {self.path}: "
                "SQLite is single-instance; stop that instance, give this one its own CDS_DATA_DIR, or set "
                "CDS_AUDIT_DSN=postgresql://... to run several instances on one audit chain"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._lock_fd = descriptor

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self) -> None:
        if self._connection is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.single_instance and self._lock_fd is None:
            self._lock()
        created = not self.path.exists()
        # isolation_level=None: transactions are exactly the BEGIN IMMEDIATE/COMMIT written below.
        # ``timeout`` is SQLite's busy timeout (the one setting: no separate PRAGMA busy_timeout).
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=self.busy_timeout_s)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        if created:
            # The file holds PHI (patient references, card text): owner-only.
            os.chmod(self.path, 0o600)
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._unlock()

    def probe(self) -> None:
        if self._connection is None:
            raise AuditError("the audit store is not open")
        try:
            # Read-only, on its own connection: WAL readers never wait for the writer's lock.
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                    timeout=self.busy_timeout_s)
            try:
                probe.execute("SELECT MAX(version) FROM schema_version").fetchall()
            finally:
                probe.close()
        except sqlite3.Error as error:
            raise AuditError(f"audit ping failed: {type(error).__name__}") from error

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._connection is None:
            raise AuditError("the audit store is not open")
        return self._connection.execute(sql, tuple(params))

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._connection is None:
            raise AuditError("the audit store is not open")
        self._connection.executemany(sql, [tuple(params) for params in rows])

    @contextmanager
    def _transaction(self, *, chain: bool) -> Iterator[None]:
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
            self._execute("COMMIT")
        except BaseException:
            if self._connection is not None and self._connection.in_transaction:
                self._connection.rollback()
            raise

    def _table_exists(self, name: str) -> bool:
        return bool(self._execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchall())

    def migrations(self) -> Sequence[Migration]:
        return [(1, _V1), (2, _V2)]

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)
