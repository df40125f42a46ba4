"""``audit show``, ``export`` and ``stats``: the auditor's reads. Each first appends its audit-access row."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from hooks.audit.chain import GENESIS, ROW_COLUMNS
from hooks.audit.cli_common import EXIT_OK, MANIFEST_SUFFIX, CliError, file_sha256, filters
from hooks.audit.codec import utc_iso
from hooks.audit.export import audit_event, card_kind, guidance_response
from hooks.audit.schema import StoredRow
from hooks.audit.sql import AuditLog
from hooks.audit.stats import card_stats

__all__ = ["export", "row_to_jsonl", "show", "stats"]


def show(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    log.append_access("show", filters(args))
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
        cards = {str(card.get("uuid")): card for card in document.get("cards", ()) if isinstance(card, dict)}
        for item in feedback.get(row["hook_instance"], ()) if row["hook_instance"] else ():
            reason = item.get("override_reason_display") or item.get("override_reason_code") or ""
            accepted = _accepted_suggestions(cards.get(str(item["card_uuid"])), item.get("accepted_suggestions", ()))
            print(f"    feedback {item['received_at']}: {item['outcome']} card {item['card_uuid']}"
                  f"{' (' + reason + ')' if reason else ''}{': ' + accepted if accepted else ''}", file=out)
    print(f"{shown} hook call(s)", file=out)
    return EXIT_OK


def _accepted_suggestions(card: dict[str, Any] | None, accepted: Iterable[str]) -> str:
    """``suggestion "Order serum phosphate" (uuid s1)`` for each accepted id, by the label the card offered."""
    labels = {str(s.get("uuid")): str(s.get("label")) for s in (card or {}).get("suggestions", ())
              if isinstance(s, dict) and s.get("uuid")}
    named = [f'suggestion "{labels[str(i)]}" (uuid {i})' if str(i) in labels else f"suggestion {i} (not on the card)"
             for i in accepted]
    return "; ".join(named)


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


def export(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    if args.format == "jsonl" and args.patient:
        # One patient's rows are not a contiguous run of the chain: such a file could never re-verify.
        raise CliError("--format jsonl archives a contiguous run of the chain and cannot be filtered by "
                        "--patient; use --format auditevent for one patient's records")
    log.append_access("export", filters(args))
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
                "records": ends.records, "sha256": file_sha256(Path(args.output)),
                "exported_at": utc_iso(args.clock()), "filters": filters(args),
            }
            target = Path(args.output)
            with _private_file(target.with_name(target.name + MANIFEST_SUFFIX)) as handle:
                handle.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        head_seq, head_hash = log.head()
        print(f"live chain head seq {head_seq} hash {head_hash}", file=sys.stderr)
    return EXIT_OK


def stats(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    log.append_access("stats", filters(args))
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
    print("\noverride rate = overridden / (accepted + overridden) on cards that offered suggestions; a card "
          "without suggestions can only be dismissed (n/a)", file=out)
    return EXIT_OK
