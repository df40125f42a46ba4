"""Group commit (issue 14): appends arriving while a batch commits join the next transaction, every caller
returns only once the transaction holding its own record committed, and a failed batch fails each of its
callers (the app's 503). Both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from hooks.audit import AuditError, HookCallRecord
from hooks.audit.sql_store import SqlAuditStore
from tests.audit.conftest import call_record, chain_lock_held


def _recording_batches(store: SqlAuditStore, hold_first: threading.Event | None = None) -> list[int]:
    sizes: list[int] = []
    commit = store.log.append_calls

    def recording(records: Sequence[HookCallRecord]) -> list[int | AuditError]:
        sizes.append(len(records))
        if hold_first is not None and len(sizes) == 1:
            hold_first.wait(5)
        return commit(records)

    store.log.append_calls = recording  # type: ignore[method-assign]
    return sizes


async def test_appends_during_a_commit_join_the_next_transaction(store: SqlAuditStore) -> None:
    release = threading.Event()
    sizes = _recording_batches(store, hold_first=release)
    first = asyncio.ensure_future(store.append_call(call_record()))
    await asyncio.sleep(0.05)
    later = [asyncio.ensure_future(store.append_call(call_record())) for _ in range(9)]
    await asyncio.sleep(0.1)
    # Nothing is acknowledged before the transaction holding it committed.
    assert not any(task.done() for task in (first, *later))
    release.set()
    await asyncio.gather(first, *later)
    assert sizes == [1, 9]
    verdict = await store.verify()
    assert verdict.ok, verdict.describe()
    assert verdict.records == 10


async def test_a_failed_batch_fails_each_of_its_callers(store: SqlAuditStore, audit_dsn: str) -> None:
    await store.append_call(call_record())
    with chain_lock_held(audit_dsn):
        results = await asyncio.gather(*(store.append_call(call_record()) for _ in range(5)),
                                       return_exceptions=True)
    assert all(isinstance(result, AuditError) for result in results), results
    await store.append_call(call_record())
    verdict = await store.verify()
    assert verdict.ok, verdict.describe()
    assert verdict.records == 2  # none of the failed batch was written


async def test_a_record_that_cannot_be_encoded_fails_alone(store: SqlAuditStore) -> None:
    sizes = _recording_batches(store)
    good, bad, also_good = call_record(), call_record(http_status=2**40), call_record()
    results = await asyncio.gather(*(store.append_call(r) for r in (good, bad, also_good)), return_exceptions=True)
    assert sizes == [3]
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], AuditError)
    found = [await store.find_calls(r.hook_instance or "", r.received_at) for r in (good, bad, also_good)]
    assert [len(calls) for calls in found] == [1, 0, 1]


@pytest.mark.parametrize("callers", [1, 16])
async def test_the_chain_holds_for_any_batch_size(store: SqlAuditStore, callers: int) -> None:
    for _ in range(3):
        await asyncio.gather(*(store.append_call(call_record()) for _ in range(callers)))
    verdict = await store.verify()
    assert verdict.ok, verdict.describe()
    assert verdict.records == 3 * callers
