"""The service call's own lane (hooks/hot_route.py) answers exactly as the full FastAPI stack does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.registry import HookCall, HookOutcome, ServiceDefinition, ServiceRegistry
from hooks.services.calcinosis import prefetch_templates
from tests.conftest import FIXED_NOW, load_fixture, running_client
from tests.conftest import test_settings as settings_for_test
from tests.integration.prefetch_builder import build_prefetch

SERVICE = "/cds-services/calcinosis-assessment"
ORIGIN = "https://sandbox.example.org"


def _calciphylaxis_call() -> dict[str, Any]:
    bundle = load_fixture("calcinosis/calciphylaxis_dialysis_warfarin.json")
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    context = {"userId": "Practitioner/u1", "patientId": patient}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": build_prefetch(bundle, prefetch_templates(), context)}


async def _answer(hot_lane: bool, method: str, path: str, **request: Any) -> tuple[httpx.Response, MemoryAuditStore]:
    store = MemoryAuditStore()
    app = create_app(settings_for_test(), audit_store=store, clock=lambda: FIXED_NOW)
    app.hot_lane = hot_lane
    async with running_client(app) as client:
        response = await client.request(method, path, **request)
    return response, store


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return response.status_code, headers, response.content


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs"),
    [
        pytest.param("POST", SERVICE, {"json": _calciphylaxis_call()}, id="cards"),
        pytest.param("POST", SERVICE, {"content": b"{not json", "headers": {"content-type": "application/json"}},
                     id="malformed-400"),
        pytest.param("POST", SERVICE, {"content": b"{}", "headers": {"content-type": "text/plain"}}, id="415"),
        pytest.param("POST", "/cds-services/no-such-service", {"json": _calciphylaxis_call()}, id="unknown-404"),
        pytest.param("POST", SERVICE + "/", {"json": _calciphylaxis_call()}, id="trailing-slash"),
        pytest.param("GET", SERVICE, {}, id="get-405"),
    ],
)
async def test_the_lane_answers_what_the_full_stack_answers(
    method: str, path: str, request_kwargs: dict[str, Any]
) -> None:
    hot, hot_store = await _answer(True, method, path, **request_kwargs)
    full, full_store = await _answer(False, method, path, **request_kwargs)
    assert _comparable(hot) == _comparable(full)
    assert hot.headers.get("x-content-type-options") == "nosniff"
    assert [r.http_status for r in hot_store.calls] == [r.http_status for r in full_store.calls]


async def test_a_streamed_body_over_the_limit_is_413_on_the_lane() -> None:
    store = MemoryAuditStore()
    app = create_app(settings_for_test(max_body_bytes=1024), audit_store=store, clock=lambda: FIXED_NOW)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    async with running_client(app) as client:
        response = await client.post(SERVICE, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert [r.http_status for r in store.calls] == [413]


async def test_a_bug_on_the_lane_is_a_500_operation_outcome_with_security_headers() -> None:
    def broken(call: HookCall) -> HookOutcome:
        raise RuntimeError("bug")

    registry = ServiceRegistry()
    registry.register(ServiceDefinition(id="broken", hook="patient-view", title="t", description="d", prefetch={},
                                        essential_keys=frozenset(), handler=broken))
    store = MemoryAuditStore()
    app = create_app(settings_for_test(), audit_store=store, registry=registry, clock=lambda: FIXED_NOW)
    async with running_client(app) as client:
        response = await client.post("/cds-services/broken", json=_calciphylaxis_call())
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["cache-control"] == "no-store"
    assert store.calls[-1].reason_class == "internal-error:RuntimeError"


async def test_with_cors_configured_a_service_call_carries_the_cors_grant() -> None:
    app = create_app(settings_for_test(cors_origins=[ORIGIN]), audit_store=MemoryAuditStore(),
                     clock=lambda: FIXED_NOW)
    async with running_client(app) as client:
        response = await client.post(SERVICE, json=_calciphylaxis_call(), headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_an_escaping_cds_error_gets_its_own_status_on_the_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the app's CdsError handler does on the full stack (the pipeline answers its own errors today)."""
    import hooks.hot_route
    from hooks.errors import NotFound

    async def refusing(*args: Any) -> Any:
        raise NotFound("no CDS service with this id")

    monkeypatch.setattr(hooks.hot_route, "handle_service_call", refusing)
    app = create_app(settings_for_test(), audit_store=MemoryAuditStore(), clock=lambda: FIXED_NOW)
    async with running_client(app) as client:
        response = await client.post(SERVICE, json=_calciphylaxis_call())
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("hot_lane", [True, False])
async def test_a_configured_root_path_is_routed_alike(hot_lane: bool) -> None:
    store = MemoryAuditStore()
    app = create_app(settings_for_test(), audit_store=store, clock=lambda: FIXED_NOW)
    app.hot_lane = hot_lane
    app.root_path = "/cds"
    async with running_client(app) as client:
        response = await client.post("/cds" + SERVICE, json=_calciphylaxis_call())
    assert response.status_code == 200
    assert response.json()["cards"]
