"""What ``/readyz`` checks besides the audit store's ping: the disks the service writes to, and the FHIR pools.

A readiness check returns the problems it sees (empty when ready). ``/readyz`` answers 503 naming them, so an
orchestrator stops routing calls to an instance that would only answer 503 (a full disk) or fail every FHIR
fallback (a saturated or leaked pool). Issue 16 item 9.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

__all__ = ["ReadinessCheck", "disk_check", "writable_directories"]

ReadinessCheck = Callable[[], Awaitable[list[str]]]

# A write this size must succeed: SQLite needs room for a WAL frame and a checkpoint file line, not one byte
# (a disk with a few blocks left accepts a 1-byte probe and then fails every audit append).
PROBE_BYTES = 64 * 1024
_PROBE_NAME = ".calcinosis-readyz-probe"


def writable_directories(audit_dsn: str | None, data_dir: Path) -> list[Path]:
    """Where the service writes: the data directory, and the SQLite database's directory when it is elsewhere."""
    directories = [data_dir]
    if audit_dsn and audit_dsn.startswith("sqlite:///"):
        directories.append(Path(audit_dsn.removeprefix("sqlite:///")).parent)
    unique: dict[str, Path] = {}
    for directory in directories:
        unique.setdefault(str(directory.resolve()), directory)
    return list(unique.values())


def _probe(directory: Path) -> str | None:
    if not directory.is_dir():
        return None  # not created yet (the store creates it on open): nothing to report
    target = directory / f"{_PROBE_NAME}-{os.getpid()}"
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, b"\0" * PROBE_BYTES)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, "OSError")
        return f"the disk of {directory} refuses writes ({name})"
    finally:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
    return None


def disk_check(directories: Iterable[Path]) -> ReadinessCheck:
    paths = list(directories)

    async def check() -> list[str]:
        results = await asyncio.to_thread(lambda: [_probe(path) for path in paths])
        return [problem for problem in results if problem]

    return check
