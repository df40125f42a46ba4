"""What the audit CLI's commands share: exit codes, the "could not check" error, filters as recorded."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hooks.audit.codec import utc_iso
from hooks.audit.sql import AuditLog

__all__ = ["EXIT_BROKEN", "EXIT_ERROR", "EXIT_OK", "MANIFEST_SUFFIX", "CliError", "Handler", "file_sha256",
           "filters"]

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2
MANIFEST_SUFFIX = ".manifest.json"
Handler = Callable[[argparse.Namespace, AuditLog, str, IO[str]], int]


class CliError(Exception):
    """The command could not check or read (configuration, I/O): exit code 2."""


def filters(args: argparse.Namespace) -> dict[str, Any]:
    """The command's filters as its audit-access row records them."""
    found: dict[str, Any] = {}
    for name in ("patient", "format", "output"):
        if getattr(args, name, None):
            found[name] = str(getattr(args, name))
    for name in ("since", "until"):
        if getattr(args, name, None):
            found[name] = utc_iso(getattr(args, name))
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
