"""CPU after the fetch stays off the event loop and inside a budget (issue 16 item 5); duplicate JSON member
names are refused (item 7).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hooks.audit import MemoryAuditStore
from hooks.models import CdsResponse
from hooks.registry import HookCall, HookOutcome, ServiceDefinition, ServiceRegistry
from tests.conftest import test_settings as settings_for

SERVICE = "/cds-services/blocking"


def registry_with(handler: Callable[[HookCall], HookOutcome]) -> ServiceRegistry:
    registry = ServiceRegistry()
    registry.register(ServiceDefinition(
        id="blocking", hook="patient-view", title="blocking", description="holds its worker",
        prefetch={}, essential_keys=frozenset(), handler=handler,
    ))
    return registry


def call(**extra: Any) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/u1", "patientId": "p1"}, **extra}


async def test_healthz_answers_while_an_assessment_is_running(make_client: Callable[..., Any]) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(hook_call: HookCall) -> HookOutcome:
        started.set()
        release.wait(5)  # on the event loop this would block everything, this test included
        return HookOutcome(CdsResponse(cards=[]))

    async with make_client(registry=registry_with(handler)) as client:
        busy = asyncio.create_task(client.post(SERVICE, json=call()))
        for _ in range(200):
            if started.is_set():
                break
            await asyncio.sleep(0.01)
        health = await asyncio.wait_for(client.get("/healthz"), 4)
        still_running = not busy.done()
        release.set()
        answered = await busy
    assert health.status_code == 200
    assert still_running
    assert answered.status_code == 200


async def test_an_assessment_past_its_budget_is_an_audited_503(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    release = threading.Event()

    def handler(hook_call: HookCall) -> HookOutcome:
        release.wait(5)
        return HookOutcome(CdsResponse(cards=[]))

    settings = settings_for(assess_timeout_s=0.2)
    try:
        async with make_client(settings=settings, registry=registry_with(handler)) as client:
            started = time.monotonic()
            response = await client.post(SERVICE, json=call())
            waited = time.monotonic() - started
    finally:
        release.set()
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "the assessment did not finish within 0.2 s" in response.json()["issue"][0]["diagnostics"]
    assert waited < 4  # the budget, not the handler, ended the call
    assert [(r.http_status, r.reason_class) for r in memory_store.calls] == [(503, "work-budget-exceeded")]


async def test_a_large_body_is_read_off_the_event_loop(make_client: Callable[..., Any]) -> None:
    """A body over the inline limit goes through a worker: still read correctly, extra members kept."""
    seen: list[int] = []

    def handler(hook_call: HookCall) -> HookOutcome:
        seen.append(len(hook_call.request.model_extra["padding"]))  # type: ignore[index]
        return HookOutcome(CdsResponse(cards=[]))

    async with make_client(registry=registry_with(handler)) as client:
        response = await client.post(SERVICE, json=call(padding="x" * (1024 * 1024)))
    assert response.status_code == 200
    assert seen == [1024 * 1024]


_DEEP = b'{"a":' * 300 + b"1" + b"}" * 300


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"hook": "patient-view", "hook": "order-sign", "hookInstance": "%s", '
         b'"context": {"userId": "Practitioner/u1", "patientId": "p1"}}', "duplicate member name"),
        (b'{"hook": "patient-view", "hookInstance": "%s", '
         b'"context": {"userId": "Practitioner/u1", "patientId": "p1", "patientId": "p2"}}', "duplicate member name"),
        (b'{"hook": "patient-view", "hookInstance": "%s", "context": {"userId": "Practitioner/u1", '
         b'"patientId": "p1"}, "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "id": "p2"}}}',
         "duplicate member name"),
        # Deeper than orjson re-serialises (the duplicate check's limit): refused, and said so.
        (b'{"hook": "patient-view", "hookInstance": "%s", "context": {"userId": "Practitioner/u1", '
         b'"patientId": "p1"}, "extra": ' + _DEEP.replace(b"%", b"%%") + b"}", "more than 254 deep"),
    ],
)
async def test_duplicate_member_names_and_deep_nesting_are_refused(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, raw: bytes, said: str
) -> None:
    body = raw % str(uuid.uuid4()).encode()
    async with make_client() as client:
        response = await client.post("/cds-services/calcinosis-assessment", content=body,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert said in response.json()["issue"][0]["diagnostics"]
    assert [r.http_status for r in memory_store.calls] == [400]


async def test_duplicate_member_names_in_feedback_are_refused(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    item = orjson.dumps({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31Z"})
    body = b'{"feedback": [' + item[:-1] + b', "card": "c2"}]}'
    async with make_client() as client:
        response = await client.post("/cds-services/calcinosis-assessment/feedback", content=body,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert memory_store.feedback == []

