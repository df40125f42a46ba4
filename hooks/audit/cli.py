"""``calcinosis-cds audit ...``: the auditor's tools (security brief §3.4 verification, §3.5 queries).

    audit verify [--expect-head SEQ:HASH] [--checkpoints FILE] [--allow-empty]
    audit verify --file ARCHIVE.jsonl [--expect-first SEQ:PREV_HASH] [--expect-head SEQ:HASH] [--manifest FILE]
    audit show --patient Patient/123 [--since 2026-01-01] [--until 2026-12-31]
    audit export --format auditevent|guidanceresponse|jsonl [--since --until --patient] [--output FILE]
    audit stats [--since --until]
    audit migrate

The store comes from ``--dsn`` or ``CDS_AUDIT_DSN``; the chain key only from ``CDS_AUDIT_KEY`` (never a
command-line argument, which would land in shell history and ``ps``). ``show``, ``export`` and ``stats``
first append an audit-access row (BALP: "Accessing the audit log is an auditable event").

Exit codes: 0 intact, 1 chain broken (or empty, or not matching a checkpoint or an expected anchor),
2 could not check (configuration, I/O, or any unexpected error).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from hooks.audit import cli_reports, cli_verify
from hooks.audit.cli_common import EXIT_ERROR, EXIT_OK, CliError, Handler
from hooks.audit.factory import audit_key, open_audit_log, postgres_checkpoint_file
from hooks.audit.sql import AuditLog
from hooks.audit.store import AuditError

__all__ = ["add_audit_commands"]


def _start(value: str) -> datetime:
    return _moment(value, end=False)


def _end(value: str) -> datetime:
    return _moment(value, end=True)


def _moment(value: str, *, end: bool) -> datetime:
    """A bare date means the whole day: ``--until 2026-12-31`` includes the 31st."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or date-time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _context(args: argparse.Namespace) -> tuple[AuditLog, str]:
    from hooks.settings import Settings
    from hooks.startup import describe_validation

    try:
        settings = Settings()
    except ValidationError as error:
        raise CliError(describe_validation(error)) from None
    dsn = args.dsn or settings.audit_dsn or ""
    if dsn.startswith("sqlite:"):
        from hooks.audit.sqlite_store import sqlite_path

        # Reading must not create an empty database where the real one was expected.
        if args.audit_command != "migrate" and not sqlite_path(dsn).exists():
            raise CliError(f"no audit database at {sqlite_path(dsn)}")
    # PostgreSQL: the service instances write checkpoints under their data directory; read this host's.
    checkpoint_file = None if dsn.startswith("sqlite:") else postgres_checkpoint_file(settings.data_dir)
    log = open_audit_log(dsn, audit_key(settings), checkpoint_file=checkpoint_file, clock=args.clock)
    log.open()
    return log, settings.public_base_url


_SQLITE_FULL = 13
_FULL_BELOW_BYTES = 64 * 1024
_PG_DISK_FULL = "53100"


def _sqlite_directory(args: argparse.Namespace) -> Path | None:
    from hooks.audit.sqlite_store import sqlite_path

    dsn = getattr(args, "dsn", None) or os.environ.get("CDS_AUDIT_DSN", "")
    try:
        return sqlite_path(dsn).resolve().parent if dsn.startswith("sqlite:") else None
    except AuditError:
        return None


def _disk_full(error: BaseException, database_directory: Path | None) -> bool:
    """Whether ``error`` comes from a full disk: ENOSPC, SQLITE_FULL, PostgreSQL's 53100, or (SQLite reports
    a failed shared-memory or WAL write as an I/O error) no room left where the SQLite database lives."""
    if (database_directory is not None and database_directory.is_dir()
            and shutil.disk_usage(database_directory).free < _FULL_BELOW_BYTES):
        return True
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if getattr(seen, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(seen):
            return True
        if getattr(seen, "sqlstate", None) == _PG_DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        log: AuditLog | None = None
        try:
            if getattr(args, "file", None):
                return cli_verify.verify_archive(args, sys.stdout)
            log, base_url = _context(args)
            return handler(args, log, base_url, sys.stdout)
        except (CliError, AuditError, OSError) as error:
            if _disk_full(error, _sqlite_directory(args)):
                # Every read is recorded before any output (no access row, no output), so nothing can be read
                # while the database's disk is full; an --output on another disk does not change that.
                print(f"audit: the audit database's disk is full ({error}); nothing was exported or shown: "
                      "every read of the log is recorded in it first. Free space on the disk that holds the "
                      "audit database (CDS_AUDIT_DSN) and run the command again.", file=sys.stderr)
                return EXIT_ERROR
            print(f"audit: {error}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as error:  # anything unexpected is "could not check" (2), never "broken" (1)
            print(f"audit: unexpected {type(error).__name__}: {error}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            if log is not None:
                log.close()

    return run


def _migrate(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    print(f"audit schema at version {log.schema_version()}", file=out)
    return EXIT_OK


def add_audit_commands(commands: Any) -> None:
    """Register ``audit`` and its sub-commands on ``calcinosis-cds``'s sub-parser object."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--dsn", help="audit store DSN (default: CDS_AUDIT_DSN, else sqlite:///data/audit.sqlite3)")
    period = argparse.ArgumentParser(add_help=False)
    period.add_argument("--since", type=_start, help="from this date or date-time (UTC unless an offset is given)")
    period.add_argument("--until", type=_end, help="up to and including this date (a date-time is exclusive)")

    audit = commands.add_parser("audit", help="verify, read and export the audit trail")
    verbs = audit.add_subparsers(dest="audit_command", required=True)

    verify = verbs.add_parser("verify", parents=[store], help="walk the hash chain; exit 1 at the first broken link")
    verify.add_argument("--expect-head", metavar="SEQ:HASH", help="a head recorded earlier (archive, checkpoint)")
    verify.add_argument("--file", help="verify an archive written by 'export --format jsonl' instead of the store")
    verify.add_argument("--expect-first", metavar="SEQ:PREV_HASH",
                        help="with --file: the archive's first record and the link before it, as export printed")
    verify.add_argument("--manifest", help="with --file: the manifest (default: ARCHIVE.manifest.json if present)")
    verify.add_argument("--checkpoints", action="append", metavar="FILE",
                        help="also compare with this checkpoint file (JSON lines; repeatable)")
    verify.add_argument("--allow-empty", action="store_true", help="an empty log is not an error (a new store)")
    verify.set_defaults(func=_run(cli_verify.verify))

    show = verbs.add_parser("show", parents=[store, period], help="hook calls, cards, rules and feedback, readable")
    show.add_argument("--patient", help="e.g. Patient/123")
    show.set_defaults(func=_run(cli_reports.show))

    export = verbs.add_parser("export", parents=[store, period], help="NDJSON: FHIR AuditEvent, GuidanceResponse, raw")
    export.add_argument("--format", choices=["auditevent", "guidanceresponse", "jsonl"], default="auditevent")
    export.add_argument("--patient", help="e.g. Patient/123 (not with --format jsonl)")
    export.add_argument("--output", help="write here (mode 0600) instead of standard output")
    export.set_defaults(func=_run(cli_reports.export))

    stats = verbs.add_parser("stats", parents=[store, period], help="cards shown/accepted/overridden per rule and kind")
    stats.set_defaults(func=_run(cli_reports.stats))

    migrate = verbs.add_parser("migrate", parents=[store], help="create or upgrade the schema (run as the owner role)")
    migrate.set_defaults(func=_run(_migrate))
