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
import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from hooks.audit.chain import GENESIS, ROW_COLUMNS, ChainVerdict, canonical_json, verify_rows
from hooks.audit.codec import utc_iso
from hooks.audit.export import audit_event, card_kind, card_stats, guidance_response
from hooks.audit.factory import audit_key, open_audit_log, postgres_checkpoint_file
from hooks.audit.schema import StoredRow
from hooks.audit.sql import AuditLog
from hooks.audit.store import AuditError

__all__ = ["add_audit_commands", "row_to_jsonl"]

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2


class _CliError(Exception):
    pass


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


MANIFEST_SUFFIX = ".manifest.json"


def _context(args: argparse.Namespace) -> tuple[AuditLog, str]:
    from hooks.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        raise _CliError("; ".join(str(item["msg"]) for item in error.errors())) from None
    dsn = args.dsn or settings.audit_dsn or ""
    if dsn.startswith("sqlite:"):
        from hooks.audit.sqlite_store import sqlite_path

        # Reading must not create an empty database where the real one was expected.
        if args.audit_command != "migrate" and not sqlite_path(dsn).exists():
            raise _CliError(f"no audit database at {sqlite_path(dsn)}")
    # PostgreSQL: the service instances write checkpoints under their data directory; read this host's.
    checkpoint_file = None if dsn.startswith("sqlite:") else postgres_checkpoint_file(settings.data_dir)
    log = open_audit_log(dsn, audit_key(settings), checkpoint_file=checkpoint_file, clock=args.clock)
    log.open()
    return log, settings.public_base_url


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in ("patient", "format", "output"):
        if getattr(args, name, None):
            filters[name] = str(getattr(args, name))
    for name in ("since", "until"):
        if getattr(args, name, None):
            filters[name] = utc_iso(getattr(args, name))
    return filters


# --------------------------------------------------------------------------- verify


def _read_archive(path: Path) -> Iterator[StoredRow]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                row: StoredRow = orjson.loads(line)
                row["document"] = canonical_json(row["document"]).decode()
                yield row


def _anchor(value: str | None, option: str) -> tuple[int, str] | None:
    if not value:
        return None
    seq_text, _, hash_text = value.partition(":")
    if not seq_text.isdigit() or len(hash_text) != 64:
        raise _CliError(f"{option} takes SEQ:HASH as printed by a previous verify or export")
    return int(seq_text), hash_text.lower()


def _expected_head(args: argparse.Namespace) -> tuple[int, str] | None:
    return _anchor(args.expect_head, "--expect-head")


def _report(verdict: ChainVerdict, expect: tuple[int, str] | None, hash_at: Callable[[int], str | None],
            out: IO[str]) -> int:
    print(verdict.describe(), file=out)
    if not verdict.ok:
        return EXIT_BROKEN
    if expect is not None:
        stored = hash_at(expect[0])
        if stored != expect[1]:
            why = "is missing (records removed)" if stored is None else f"has hash {stored}"
            print(f"chain BROKEN against the recorded head: seq {expect[0]} {why}, expected {expect[1]}", file=out)
            return EXIT_BROKEN
        print(f"recorded head seq {expect[0]} matches", file=out)
    return EXIT_OK


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(args: argparse.Namespace, archive: Path) -> dict[str, Any] | None:
    path = Path(args.manifest) if args.manifest else archive.with_name(archive.name + MANIFEST_SUFFIX)
    if not path.exists():
        if args.manifest:
            raise _CliError(f"no manifest at {path}")
        return None
    manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    return manifest


def _verify_archive(args: argparse.Namespace, out: IO[str]) -> int:
    """An archive verifies on its own from its first ``prev_hash``; its two ends are checked against anchors
    recorded when it was written (``--expect-first``/``--expect-head``, else the manifest next to it)."""
    from hooks.settings import Settings

    archive = Path(args.file)
    rows = list(_read_archive(archive))
    if not rows:
        raise _CliError(f"{args.file} holds no records")
    first_seq, first_link = int(rows[0]["seq"]), bytes.fromhex(rows[0]["prev_hash"])
    verdict = verify_rows(audit_key(Settings()), rows, start_seq=first_seq, start_hash=first_link)
    print(verdict.describe(), file=out)
    if not verdict.ok:
        return EXIT_BROKEN
    last = rows[-1]
    print(f"archive seq {first_seq}..{last['seq']}: first prev_hash {first_link.hex()}, last hash {last['hash']}",
          file=out)
    manifest = _manifest(args, archive)
    expect_first = _anchor(args.expect_first, "--expect-first")
    expect_head = _expected_head(args)
    problems: list[str] = []
    if manifest is not None:
        print(f"manifest: seq {manifest.get('first_seq')}..{manifest.get('last_seq')}, "
              f"{manifest.get('records')} records", file=out)
        if manifest.get("sha256") != _file_sha256(archive):
            problems.append("the archive's SHA-256 differs from its manifest (the file was changed)")
        if expect_first is None and manifest.get("first_seq") is not None:
            expect_first = int(manifest["first_seq"]), str(manifest["prev_hash"])
        if expect_head is None and manifest.get("last_seq") is not None:
            expect_head = int(manifest["last_seq"]), str(manifest["hash"])
    by_seq = {int(row["seq"]): row for row in rows}
    if expect_first is not None:
        row = by_seq.get(expect_first[0])
        if row is None:
            problems.append(f"seq {expect_first[0]}, the expected first record, is missing (archive cut at the start)")
        elif str(row["prev_hash"]).lower() != expect_first[1]:
            problems.append(f"seq {expect_first[0]} links to {row['prev_hash']}, expected {expect_first[1]}")
        else:
            print(f"expected first seq {expect_first[0]} matches", file=out)
    if expect_head is not None:
        row = by_seq.get(expect_head[0])
        if row is None:
            problems.append(f"seq {expect_head[0]}, the expected last record, is missing (archive cut at the end)")
        elif str(row["hash"]).lower() != expect_head[1]:
            problems.append(f"seq {expect_head[0]} has hash {row['hash']}, expected {expect_head[1]}")
        else:
            print(f"recorded head seq {expect_head[0]} matches", file=out)
    if problems:
        for problem in problems:
            print(f"archive BROKEN against its anchors: {problem}", file=out)
        return EXIT_BROKEN
    if expect_first is None and expect_head is None:
        print("warning: no anchors (--expect-first/--expect-head or a manifest): an archive cut at either end "
              "would verify too; compare its ends with those recorded at export", file=out)
    return EXIT_OK


def _verify(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    expect = _expected_head(args)
    files = [Path(name) for name in args.checkpoints or ()]
    for path in files:
        if not path.exists():
            raise _CliError(f"no checkpoint file at {path}")
    verdict = log.verify(files=files)
    code = _report(verdict, expect, log.hash_at, out)
    if code == EXIT_OK and verdict.records == 0 and not args.allow_empty:
        print("chain EMPTY: the audit log holds no records; if every record was deleted this is the only sign "
              "(pass --allow-empty for a store that is really new)", file=out)
        return EXIT_BROKEN
    return code


# --------------------------------------------------------------------------- show


def _show(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    log.append_access("show", _filters(args))
    feedback: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in log.rows(kinds=["feedback"], since=args.since, patient=args.patient):
        feedback[row["hook_instance"]].append(orjson.loads(row["document"]))
    shown = 0
    for row in log.rows(kinds=["call"], since=args.since, until=args.until, patient=args.patient):
        shown += 1
        document = orjson.loads(row["document"])
        caller = "/".join(str(part) for part in (row["iss"], row["tenant"]) if part) or "anonymous"
        print(
            f"{row['occurred_at']}  {row['service_id']}  {row['hook'] or '-'}  HTTP {row['http_status']}  "
            f"{row['patient_ref'] or '-'}  user {document.get('user_ref') or '-'}  caller {caller}",
            file=out,
        )
        print(f"    hookInstance {row['hook_instance'] or '-'}  record {row['record_id']}  seq {row['seq']}", file=out)
        if document.get("reason_class"):
            print(f"    failure: {document['reason_class']}", file=out)
        for card in document.get("cards", ()):
            print(f"    card [{card.get('indicator')}] {card.get('summary')}  (kind {card_kind(card)}, "
                  f"uuid {card.get('uuid')})", file=out)
        if row["http_status"] == 200:
            rules = ", ".join(document.get("rules_fired", ())) or "none"
            print(f"    rules fired: {rules}  (rule set {document.get('ruleset_version')}, "
                  f"hash {str(document.get('ruleset_hash'))[:12]}, code {document.get('code_version')})", file=out)
        for item in feedback.get(row["hook_instance"], ()) if row["hook_instance"] else ():
            reason = item.get("override_reason_display") or item.get("override_reason_code") or ""
            print(f"    feedback {item['received_at']}: {item['outcome']} card {item['card_uuid']}"
                  f"{' (' + reason + ')' if reason else ''}", file=out)
    print(f"{shown} hook call(s)", file=out)
    return EXIT_OK


# --------------------------------------------------------------------------- export


def row_to_jsonl(row: StoredRow, prev_hash: str) -> bytes:
    """One raw record: every column, the parsed document, and both chain links (re-verifiable offline)."""
    line = {column: row[column] for column in ROW_COLUMNS}
    line["document"] = orjson.loads(row["document"])
    line["hash"], line["prev_hash"] = row["hash"], prev_hash
    return orjson.dumps(line) + b"\n"


class _Ends:
    """The first and last links of a JSON-lines archive, as it is written."""

    def __init__(self) -> None:
        self.first: tuple[int, str] | None = None
        self.last: tuple[int, str] | None = None
        self.records = 0


def _jsonl_lines(args: argparse.Namespace, log: AuditLog, ends: _Ends) -> Iterator[bytes]:
    # A period is exported as the contiguous run of seq that covers it, so the archive re-verifies
    # on its own (``verify --file``) even where arrival order and commit order differ at its edges.
    span = log.seq_span(args.since, args.until)
    rows = iter(()) if span is None else log.rows(from_seq=span[0], to_seq=span[1])
    previous_seq, previous_hash = -1, ""
    for row in rows:
        seq = int(row["seq"])
        link = previous_hash if previous_seq == seq - 1 else (log.hash_at(seq - 1) or GENESIS.hex())
        if ends.first is None:
            ends.first = (seq, link)
        ends.last, ends.records = (seq, str(row["hash"])), ends.records + 1
        yield row_to_jsonl(row, link)
        previous_seq, previous_hash = seq, str(row["hash"])


def _export_lines(args: argparse.Namespace, log: AuditLog, base_url: str, ends: _Ends) -> Iterator[bytes]:
    if args.format == "jsonl":
        yield from _jsonl_lines(args, log, ends)
        return
    kinds: Any = ["call"] if args.format == "guidanceresponse" else None
    for row in log.rows(kinds=kinds, since=args.since, until=args.until, patient=args.patient):
        resource = audit_event(row, base_url) if args.format == "auditevent" else guidance_response(row, base_url)
        if resource is not None:
            yield orjson.dumps(resource) + b"\n"


@contextlib.contextmanager
def _private_file(target: Path) -> Iterator[IO[bytes]]:
    """Write ``target`` atomically, owner-only: a fresh temporary file beside it (``mkstemp``: O_EXCL,
    mode 0600, never an existing file or symlink), fsynced, then renamed over ``target``."""
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _export(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    if args.format == "jsonl" and args.patient:
        # One patient's rows are not a contiguous run of the chain: such a file could never re-verify.
        raise _CliError("--format jsonl archives a contiguous run of the chain and cannot be filtered by "
                        "--patient; use --format auditevent for one patient's records")
    log.append_access("export", _filters(args))
    ends = _Ends()
    count = 0
    if args.output:
        target = Path(args.output)
        with _private_file(target) as handle:
            for line in _export_lines(args, log, base_url, ends):
                handle.write(line)
                count += 1
    else:
        for line in _export_lines(args, log, base_url, ends):
            out.write(line.decode())
            count += 1
    print(f"exported {count} {args.format} record(s)", file=sys.stderr)
    if args.format == "jsonl":
        if ends.first is None or ends.last is None:
            print("the period holds no records: nothing to anchor", file=sys.stderr)
            return EXIT_OK
        first, last = ends.first, ends.last
        print(f"archive seq {first[0]}..{last[0]}; record these anchors off the box and check the archive with\n"
              f"  audit verify --file ARCHIVE --expect-first {first[0]}:{first[1]} --expect-head {last[0]}:{last[1]}",
              file=sys.stderr)
        if args.output:
            manifest = {
                "format": "calcinosis-cds audit jsonl",
                "first_seq": first[0], "prev_hash": first[1], "last_seq": last[0], "hash": last[1],
                "records": ends.records, "sha256": _file_sha256(Path(args.output)),
                "exported_at": utc_iso(args.clock()), "filters": _filters(args),
            }
            target = Path(args.output)
            with _private_file(target.with_name(target.name + MANIFEST_SUFFIX)) as handle:
                handle.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        head_seq, head_hash = log.head()
        print(f"live chain head seq {head_seq} hash {head_hash}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- stats


def _stats(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    log.append_access("stats", _filters(args))
    statuses: Counter[int] = Counter()

    def calls() -> Iterator[StoredRow]:
        for row in log.rows(kinds=["call"], since=args.since, until=args.until):
            statuses[int(row["http_status"])] += 1
            yield row

    by_rule, by_kind = card_stats(calls(), log.rows(kinds=["feedback"], since=args.since))
    total = sum(statuses.values())
    print(f"hook calls: {total} ({', '.join(f'HTTP {code}: {n}' for code, n in sorted(statuses.items())) or 'none'})",
          file=out)
    print("\n".join(["", *by_rule.table("rule id"), "", *by_kind.table("card kind")]), file=out)
    return EXIT_OK


# --------------------------------------------------------------------------- wiring


Handler = Callable[[argparse.Namespace, AuditLog, str, IO[str]], int]


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
                return _verify_archive(args, sys.stdout)
            log, base_url = _context(args)
            return handler(args, log, base_url, sys.stdout)
        except (_CliError, AuditError, OSError) as error:
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
    verify.set_defaults(func=_run(_verify))

    show = verbs.add_parser("show", parents=[store, period], help="hook calls, cards, rules and feedback, readable")
    show.add_argument("--patient", help="e.g. Patient/123")
    show.set_defaults(func=_run(_show))

    export = verbs.add_parser("export", parents=[store, period], help="NDJSON: FHIR AuditEvent, GuidanceResponse, raw")
    export.add_argument("--format", choices=["auditevent", "guidanceresponse", "jsonl"], default="auditevent")
    export.add_argument("--patient", help="e.g. Patient/123 (not with --format jsonl)")
    export.add_argument("--output", help="write here (mode 0600) instead of standard output")
    export.set_defaults(func=_run(_export))

    stats = verbs.add_parser("stats", parents=[store, period], help="cards shown/accepted/overridden per rule and kind")
    stats.set_defaults(func=_run(_stats))

    migrate = verbs.add_parser("migrate", parents=[store], help="create or upgrade the schema (run as the owner role)")
    migrate.set_defaults(func=_run(_migrate))
