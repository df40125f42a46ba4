"""``audit verify``: walk the live chain (and its checkpoints), or an exported archive against its anchors."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from hooks.audit.chain import ChainVerdict, canonical_json, verify_rows
from hooks.audit.cli_common import EXIT_BROKEN, EXIT_OK, MANIFEST_SUFFIX, CliError, file_sha256
from hooks.audit.factory import audit_key
from hooks.audit.schema import StoredRow
from hooks.audit.sql import AuditLog

__all__ = ["verify", "verify_archive"]


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
        raise CliError(f"{option} takes SEQ:HASH as printed by a previous verify or export")
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


def _manifest(args: argparse.Namespace, archive: Path) -> dict[str, Any] | None:
    path = Path(args.manifest) if args.manifest else archive.with_name(archive.name + MANIFEST_SUFFIX)
    if not path.exists():
        if args.manifest:
            raise CliError(f"no manifest at {path}")
        return None
    manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    return manifest


def verify_archive(args: argparse.Namespace, out: IO[str]) -> int:
    """An archive verifies on its own from its first ``prev_hash``; its two ends are checked against anchors
    recorded when it was written (``--expect-first``/``--expect-head``, else the manifest next to it)."""
    from hooks.settings import Settings

    archive = Path(args.file)
    rows = list(_read_archive(archive))
    if not rows:
        raise CliError(f"{args.file} holds no records")
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
        if manifest.get("sha256") != file_sha256(archive):
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


def verify(args: argparse.Namespace, log: AuditLog, base_url: str, out: IO[str]) -> int:
    expect = _expected_head(args)
    files = [Path(name) for name in args.checkpoints or ()]
    for path in files:
        if not path.exists():
            raise CliError(f"no checkpoint file at {path}")
    verdict = log.verify(files=files)
    code = _report(verdict, expect, log.hash_at, out)
    if code == EXIT_OK and verdict.records == 0 and not args.allow_empty:
        print("chain EMPTY: the audit log holds no records; if every record was deleted this is the only sign "
              "(pass --allow-empty for a store that is really new)", file=out)
        return EXIT_BROKEN
    return code
