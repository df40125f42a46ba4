"""The audit database's schema, shared by the SQLite and PostgreSQL backends, and the checkpoint file format.

``occurred_at`` is fixed-width UTC ISO 8601 text on both backends, so a hashed row is byte-identical whichever
backend wrote it and an archive verifies without knowing where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from hooks.audit.chain import ROW_COLUMNS, Checkpoint
from hooks.audit.codec import utc_iso

__all__ = [
    "CARD_INDEX_INSERT",
    "DEFAULT_CHECKPOINT_EVERY",
    "INSERT",
    "PAGE",
    "SCHEMA_VERSION",
    "Migration",
    "StoredRow",
    "checkpoint_schema",
    "core_schema",
    "read_checkpoint_file",
    "within",
]

# Bumped with every entry appended to a backend's ``migrations()``; a database newer than the code is refused.
SCHEMA_VERSION = 2
DEFAULT_CHECKPOINT_EVERY = 100
PAGE = 1000

StoredRow = dict[str, Any]
Migration = tuple[int, Sequence[str]]

# Column names come from constants in this module, never from input.
INSERT = "INSERT INTO audit_log ({}) VALUES ({})".format(  # noqa: S608
    ", ".join((*ROW_COLUMNS, "hash")), ", ".join("?" for _ in range(len(ROW_COLUMNS) + 1))
)
CARD_INDEX_INSERT = (
    "INSERT INTO card_index (card_uuid, seq, hook_instance, service_id, patient_ref, iss, tenant) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

def core_schema(big_integer: str, real: str) -> list[str]:
    """Tables and indexes both backends share (migration 1); each adds its own append-only triggers."""
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


def within(where: list[str], params: list[Any], since: datetime | None, until: datetime | None) -> None:
    """``since`` inclusive, ``until`` exclusive, compared as the fixed-width UTC text ``occurred_at`` holds."""
    if since is not None:
        where.append("occurred_at >= ?")
        params.append(utc_iso(since))
    if until is not None:
        where.append("occurred_at < ?")
        params.append(utc_iso(until))
