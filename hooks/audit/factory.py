"""Choose the audit backend from ``CDS_AUDIT_DSN`` (docs/audit.md "Configuration").

``sqlite:///path`` → embedded SQLite (default ``sqlite:///data/audit.sqlite3``); ``postgresql://`` or
``postgres://`` → PostgreSQL shared by several instances; ``memory://`` → the non-durable test store.

The service's store also takes ``CDS_AUDIT_TIMEOUT_S`` (per-call budget, default 3 s),
``CDS_AUDIT_MAX_PENDING`` (default 64) and ``CDS_AUDIT_CHECKPOINT_EVERY`` (default 100).
"""

from __future__ import annotations

from pathlib import Path

from hooks.audit.integrity import Clock, utc_now
from hooks.audit.schema import DEFAULT_CHECKPOINT_EVERY
from hooks.audit.sql import AuditLog
from hooks.audit.sql_store import SqlAuditStore
from hooks.audit.store import AuditError, AuditStore, MemoryAuditStore
from hooks.settings import Settings

__all__ = ["audit_key", "build_audit_store", "open_audit_log", "postgres_checkpoint_file"]


def audit_key(settings: Settings) -> bytes:
    if settings.audit_key is None:
        raise AuditError("CDS_AUDIT_KEY is not set")
    return settings.audit_key.get_secret_value().encode("utf-8")


def postgres_checkpoint_file(data_dir: Path) -> Path:
    """Where a PostgreSQL store's checkpoints go off the database: under the instance's data directory
    (SQLite keeps them next to its database file, ``audit.sqlite3.checkpoints.jsonl``)."""
    return data_dir / "audit-checkpoints.jsonl"


def open_audit_log(dsn: str, key: bytes, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                   checkpoint_file: Path | None = None, clock: Clock = utc_now,
                   serving: bool = False) -> AuditLog:
    """An unopened ``AuditLog`` for ``dsn``; call ``open()`` (creates and migrates the schema).

    ``checkpoint_file``: SQLite defaults to the file next to the database; PostgreSQL writes none unless given.
    ``clock``: the time written into audit-access rows, checkpoints and migrations. ``serving``: the log of a
    service instance; on SQLite a second serving instance on the same file is refused (``AuditError``).
    """
    if dsn.startswith("sqlite:"):
        from hooks.audit.sqlite_store import SqliteAuditLog, sqlite_path

        return SqliteAuditLog(sqlite_path(dsn), key, checkpoint_every=checkpoint_every,
                              checkpoint_file=checkpoint_file, clock=clock, single_instance=serving)
    if dsn.startswith(("postgresql://", "postgres://")):
        from hooks.audit.postgres_store import PostgresAuditLog

        return PostgresAuditLog(dsn, key, checkpoint_every=checkpoint_every, checkpoint_file=checkpoint_file,
                                clock=clock)
    # Never echo the DSN: it may carry a database password.
    raise AuditError("CDS_AUDIT_DSN must start with sqlite:///, postgresql:// or memory://")


def build_audit_store(settings: Settings, *, clock: Clock = utc_now) -> AuditStore:
    """The service's store. ``clock``: the service's own (replay-cache expiry, checkpoints, migrations)."""
    dsn = settings.audit_dsn or f"sqlite:///{settings.data_dir / 'audit.sqlite3'}"
    if dsn.startswith("memory:"):
        if settings.environment == "production":
            raise AuditError("CDS_AUDIT_DSN memory:// is not durable: use sqlite:/// or postgresql:// in production")
        return MemoryAuditStore()
    checkpoint_file = None if dsn.startswith("sqlite:") else postgres_checkpoint_file(settings.data_dir)
    log = open_audit_log(
        dsn, audit_key(settings), checkpoint_every=settings.audit_checkpoint_every, checkpoint_file=checkpoint_file,
        clock=clock, serving=True,
    )
    return SqlAuditStore(log, timeout_s=settings.audit_timeout_s, max_pending=settings.audit_max_pending)
