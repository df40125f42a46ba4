"""Tamper evidence of the audit chain: head validation, continuity across instances, and checkpoints.

Truncation (deleting the newest rows) cannot break the links that remain, so each store instance keeps the
last ``(seq, hash)`` it wrote and refuses to extend a chain whose head fell behind it, and heads are
checkpointed every ``checkpoint_every`` appends into the ``checkpoint`` table and a file off the database.
``ChainIntegrity`` holds that state and the append step; ``AuditLog`` supplies the database access.
"""

from __future__ import annotations

import hmac
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hooks.audit.chain import GENESIS, ROW_COLUMNS, Checkpoint, chain_hash
from hooks.audit.codec import utc_iso
from hooks.audit.schema import DEFAULT_CHECKPOINT_EVERY, INSERT, StoredRow, read_checkpoint_file
from hooks.audit.store import AuditError

__all__ = ["ChainIntegrity", "Clock", "utc_now"]

log = logging.getLogger("hooks.audit")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ChainIntegrity(ABC):
    """The chain-extending half of ``AuditLog``: every append goes through ``_append`` inside ``_chain_write``."""

    def __init__(self, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_file: Path | None = None, clock: Clock = utc_now) -> None:
        if not key:
            raise AuditError("the audit chain needs a non-empty key (CDS_AUDIT_KEY)")
        self._key = key
        # Time of checkpoints, migrations and audit-access rows; injected so tests never depend on the date.
        self._clock = clock
        self.checkpoint_every = checkpoint_every
        self.checkpoint_file = checkpoint_file
        # The last (seq, hash) this instance committed (or found valid at its first write): the database
        # head must never fall behind it, nor its hash change.
        self._last: tuple[int, str] | None = None
        self._unchecked = 0  # appends since the last checkpoint this instance wrote
        self._tx_last: tuple[int, str] | None = None
        self._tx_checkpoint = False
        self._tx_deferred: list[list[Any]] = []
        # While check_head runs at start-up a refusal is the caller's one-line message (hooks.startup).
        self._starting = False

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement with ``?`` placeholders and return the driver cursor."""

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _transaction(self, *, chain: bool) -> AbstractContextManager[None]:
        """A write transaction; ``chain=True`` also serialises against every other chain writer."""

    @abstractmethod
    def _guard(self, action: str) -> AbstractContextManager[None]: ...

    def database_identity(self) -> str | None:
        """Which database a checkpoint-file line belongs to, when one file may serve several (PostgreSQL)."""
        return None

    def _refuse(self, why: str) -> AuditError:
        if not self._starting:
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
        self._starting = True
        try:
            with self._guard("open"):
                head = self._head_row()
                self._check_continuity(*head)
                if self._last is None:
                    self._last = head
                return head
        finally:
            self._starting = False

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

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many parameter rows (PostgreSQL: one pipelined round trip). Default: one by one."""
        for params in rows:
            self._execute(sql, params)

    def _append(self, row: StoredRow, *, defer: bool = False) -> int:
        """Link ``row`` to the chain. ``defer``: its INSERT waits for ``_insert_deferred`` (same transaction),
        so a batch of calls sends its rows in one statement; only for batches that read nothing back."""
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
        values = [row[column] for column in (*ROW_COLUMNS, "hash")]
        if defer:
            self._tx_deferred.append(values)
        else:
            self._execute(INSERT, values)
        self._tx_last = (seq, row["hash"])
        if self.checkpoint_every > 0 and seq % self.checkpoint_every == 0:
            self._tx_checkpoint = True
        return seq

    def _insert_deferred(self) -> None:
        if self._tx_deferred:
            self._execute_many(INSERT, self._tx_deferred)
            self._tx_deferred = []

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
        self._tx_last, self._tx_checkpoint, self._tx_deferred = None, False, []
        try:
            checkpoint: Checkpoint | None = None
            with self._guard("append"), self._transaction(chain=True):
                yield
                self._insert_deferred()
                if self._tx_checkpoint and self._tx_last is not None:
                    checkpoint = Checkpoint(*self._tx_last, utc_iso(self._clock()))
                    self._insert_checkpoint(checkpoint)
            if self._tx_last is not None:
                self._last = self._tx_last
                self._unchecked += 1
            if checkpoint is not None:
                self._unchecked = 0
                self._write_checkpoint_file(checkpoint)
        finally:
            self._tx_last, self._tx_checkpoint, self._tx_deferred = None, False, []

    def checkpoint(self) -> Checkpoint | None:
        """Record this instance's last write as a checkpoint now (graceful shutdown); None if nothing new."""
        if self._last is None or self._unchecked == 0 or self._last[0] == 0:
            return None
        checkpoint = Checkpoint(*self._last, utc_iso(self._clock()))
        with self._guard("checkpoint"), self._transaction(chain=False):
            if self._stored_hash(checkpoint.seq) != checkpoint.hash:
                raise self._refuse(f"seq {checkpoint.seq} changed since this instance wrote it")
            self._insert_checkpoint(checkpoint)
        self._unchecked = 0
        self._write_checkpoint_file(checkpoint)
        return checkpoint
