"""One "service instance" for the concurrency test: appends N hook-call records through SqlAuditStore.

    python -m tests.audit.writer DSN COUNT TENANT START_AT_EPOCH
"""

from __future__ import annotations

import asyncio
import sys
import time

from hooks.audit.factory import open_audit_log
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import TEST_KEY, call_record


async def main(dsn: str, count: int, tenant: str, start_at: float) -> None:
    store = SqlAuditStore(open_audit_log(dsn, TEST_KEY))
    await store.open()
    # Both processes start appending at the same moment, so their transactions really contend.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    try:
        for _ in range(count):
            await store.append_call(call_record(tenant=tenant))
            # A service instance does other work between appends; without a pause one SQLite writer can
            # win the lock every time and the test would not exercise contention.
            await asyncio.sleep(0.001)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
