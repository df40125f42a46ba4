"""Choose the audit backend from ``CDS_AUDIT_DSN`` (docs/audit.md "Configuration").

``sqlite:///path`` → embedded SQLite (default ``sqlite:///data/audit.sqlite3``); ``postgresql://`` or
``postgres://`` → PostgreSQL shared by several instances; ``memory://`` → the non-durable test store.
"""

from __future__ import annotations

from hooks.audit.sql import AuditLog, SqlAuditStore
from hooks.audit.store import AuditError, AuditStore, MemoryAuditStore
from hooks.settings import Settings

__all__ = ["audit_key", "build_audit_store", "open_audit_log"]


def audit_key(settings: Settings) -> bytes:
    if settings.audit_key is None:
        raise AuditError("CDS_AUDIT_KEY is not set")
    return settings.audit_key.get_secret_value().encode("utf-8")


def open_audit_log(dsn: str, key: bytes) -> AuditLog:
    """An unopened ``AuditLog`` for ``dsn``; call ``open()`` (creates and migrates the schema)."""
    if dsn.startswith("sqlite:"):
        from hooks.audit.sqlite_store import SqliteAuditLog, sqlite_path

        return SqliteAuditLog(sqlite_path(dsn), key)
    if dsn.startswith(("postgresql://", "postgres://")):
        from hooks.audit.postgres_store import PostgresAuditLog

        return PostgresAuditLog(dsn, key)
    # Never echo the DSN: it may carry a database password.
    raise AuditError("CDS_AUDIT_DSN must start with sqlite:///, postgresql:// or memory://")


def build_audit_store(settings: Settings) -> AuditStore:
    dsn = settings.audit_dsn or f"sqlite:///{settings.data_dir / 'audit.sqlite3'}"
    if dsn.startswith("memory:"):
        if settings.environment == "production":
            raise AuditError("CDS_AUDIT_DSN memory:// is not durable: use sqlite:/// or postgresql:// in production")
        return MemoryAuditStore()
    return SqlAuditStore(open_audit_log(dsn, audit_key(settings)))
