"""Benchmark: audit overhead per hook call, per backend (security brief §3.4 "Durability").

For a realistic record (3 cards with detail and extension, 4 prefetch keys, 2 FHIR queries, facts), it
times one ``await store.append_call(record)`` through the service's own path (``SqlAuditStore``: worker
thread hop, one transaction with the chain lock, HMAC, commit) for

  * SQLite (WAL, synchronous=FULL: an fsync per commit) in a temporary directory,
  * PostgreSQL at 127.0.0.1:5432 (synchronous_commit on) in a fresh database dropped afterwards,

next to floors measured in the same run: ``orjson.dumps`` of the record and an ``await`` on a no-op store.
The append path includes the truncation check (head and last-written hash read inside the lock) and a
checkpoint every 100 appends. Also times ``store.ping()`` (/readyz), which opens a connection of its own.
Prints a Markdown table of medians and p90s. Bounded: at most 2,000 appends or 10 s per backend.
Run: ``.venv/bin/python bench/bench_audit.py`` (PostgreSQL must be running: ``make setup-postgres``).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hooks.audit.factory import open_audit_log  # noqa: E402
from hooks.audit.records import HookCallRecord  # noqa: E402
from hooks.audit.sql_store import SqlAuditStore  # noqa: E402
from tests.audit.conftest import call_record, card  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY = secrets.token_bytes(32)
MAX_RUNS, BUDGET_S, WARMUP = 2_000, 10.0, 20


def realistic_record() -> HookCallRecord:
    record = call_record(hook_instance=str(uuid.uuid4()), record_id=str(uuid.uuid4()))
    record.cards = [card("C1", "subtype"), card("W3", "work-up"), card("R2", "red-flag", indicator="warning")]
    for shown in record.cards:
        shown["detail"] = "\n".join(f"- Observation/{i}: calcium {2.4 + i / 10:.1f} mmol/L on 2026-10-{i + 1:02d}"
                                    for i in range(8))
    return record


async def timed(operation: Callable[[HookCallRecord], Awaitable[None]]) -> list[float]:
    samples: list[float] = []
    stop = time.perf_counter() + BUDGET_S
    for index in range(MAX_RUNS + WARMUP):
        record = realistic_record()
        started = time.perf_counter()
        await operation(record)
        if index >= WARMUP:
            samples.append((time.perf_counter() - started) * 1e6)
        if time.perf_counter() > stop:
            break
    return samples


def row(name: str, samples: list[float], floor: float) -> str:
    median = statistics.median(samples)
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"| {name} | {len(samples)} | {median:,.1f} µs | {p90:,.1f} µs | {median / floor:,.1f}× |"


PINGS = 200


async def backend(dsn: str) -> tuple[list[float], list[float]]:
    store = SqlAuditStore(open_audit_log(dsn, KEY))
    await store.open()
    try:
        samples = await timed(store.append_call)
        pings: list[float] = []
        for _ in range(PINGS):
            started = time.perf_counter()
            await store.ping()
            pings.append((time.perf_counter() - started) * 1e6)
        verdict = await store.verify()
        if not verdict.ok:
            raise SystemExit(f"chain broken after the benchmark: {verdict.describe()}")
        return samples, pings
    finally:
        await store.close()


async def main() -> None:
    async def serialise(record: HookCallRecord) -> None:
        orjson.dumps(record.to_dict())

    async def no_op(record: HookCallRecord) -> None:
        return None

    results: dict[str, Any] = {
        "floor: orjson.dumps(record.to_dict())": await timed(serialise),
        "floor: no-op store (await)": await timed(no_op),
    }
    with tempfile.TemporaryDirectory() as directory:
        results["SQLite WAL, synchronous=FULL"], results["ping, SQLite (own read-only connection)"] = await backend(
            f"sqlite:///{directory}/audit.sqlite3")
    database = f"calcinosis_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")  # type: ignore[arg-type]
    try:
        results["PostgreSQL 127.0.0.1 (advisory lock)"], results["ping, PostgreSQL (own connection)"] = await backend(
            f"postgresql://postgres@127.0.0.1/{database}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database} WITH (FORCE)")  # type: ignore[arg-type]

    floor = statistics.median(results["floor: orjson.dumps(record.to_dict())"])
    print(f"Record: {len(orjson.dumps(realistic_record().to_dict())):,} bytes of JSON, 3 cards. "
          f"Python {sys.version.split()[0]}.\n")
    print("| append_call | runs | median | p90 | median / orjson floor |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in results.items():
        print(row(name, samples, floor))


if __name__ == "__main__":
    asyncio.run(main())
