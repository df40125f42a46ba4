"""One "service instance" for the concurrency test: appends N hook-call records through SqlAuditStore.

    python -m tests.audit.writer DSN COUNT TENANT BARRIER_DIR

The writer opens its store, says so (``BARRIER_DIR/ready-TENANT``), then waits for ``BARRIER_DIR/go``: both
processes start appending together however long each took to start (a fixed start time lost the race on a
loaded machine, and the two writers then never interleaved).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from hooks.audit.factory import open_audit_log
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import TEST_KEY, call_record

BARRIER_TIMEOUT_S = 90.0


async def main(dsn: str, count: int, tenant: str, barrier: Path) -> None:
    store = SqlAuditStore(open_audit_log(dsn, TEST_KEY))
    await store.open()
    # Both processes start appending at the same moment, so their transactions really contend.
    (barrier / f"ready-{tenant}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            await store.close()
            raise SystemExit(f"{tenant}: no go within {BARRIER_TIMEOUT_S:g} s")
        await asyncio.sleep(0.005)
    try:
        for _ in range(count):
            await store.append_call(call_record(tenant=tenant))
            # A service instance does other work between appends; without a pause one SQLite writer can
            # win the lock every time and the test would not exercise contention.
            await asyncio.sleep(0.001)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
