"""Overload is a fast, audited 503 with an OperationOutcome, never a timeout (issue 16 item 4)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from hooks.audit import MemoryAuditStore
from hooks.models import CdsResponse
from hooks.registry import HookCall, HookOutcome
from tests.api.test_off_loop import SERVICE, call, registry_with
from tests.conftest import test_settings as settings_for


async def test_a_call_past_the_concurrency_limit_is_refused_at_once_and_audited(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    running, release = threading.Semaphore(0), threading.Event()

    def handler(hook_call: HookCall) -> HookOutcome:
        running.release()
        release.wait(5)
        return HookOutcome(CdsResponse(cards=[]))

    settings = settings_for(max_concurrent_calls=2, audit_max_pending=4, assess_workers=2)
    try:
        async with make_client(settings=settings, registry=registry_with(handler)) as client:
            busy = [asyncio.create_task(client.post(SERVICE, json=call())) for _ in range(2)]
            for _ in range(2):
                assert await asyncio.to_thread(running.acquire, True, 4)
            refused = await asyncio.wait_for(client.post(SERVICE, json=call()), 2)
            feedback = await asyncio.wait_for(client.post(f"{SERVICE}/feedback", json={"feedback": []}), 2)
            release.set()
            answered = await asyncio.gather(*busy)
    finally:
        release.set()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert feedback.status_code == 503
    assert [r.status_code for r in answered] == [200, 200]
    reasons = sorted(r.reason_class or "" for r in memory_store.calls)
    assert reasons == ["", "", "feedback:overloaded", "overloaded"]


def test_the_audit_queue_is_sized_with_the_concurrency_limit() -> None:
    with pytest.raises(ValidationError, match="at least twice"):
        settings_for(max_concurrent_calls=40, audit_max_pending=64)
    assert settings_for(max_concurrent_calls=32, audit_max_pending=64).max_concurrent_calls == 32
