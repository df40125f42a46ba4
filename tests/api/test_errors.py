"""Every error status carries an OperationOutcome, never echoes the request, and no input yields a 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hooks.audit import MemoryAuditStore
from tests.api.test_protocol import SERVICE, is_operation_outcome, request_body
from tests.conftest import test_settings as settings_for_test

CANARY_TOKEN = "canary-access-token-7f3a9c"


def _token_body(**overrides: Any) -> dict[str, Any]:
    authorization = {
        "access_token": CANARY_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "calcinosis-cds",
    }
    authorization.update(overrides)
    return request_body(fhirServer="https://ehr.example.org/fhir", fhirAuthorization=authorization)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        pytest.param(
            "post",
            SERVICE,
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            id="malformed-json",
        ),
        pytest.param("post", SERVICE, {"json": {"hook": "patient-view"}}, 400, id="invalid-body"),
        pytest.param("post", SERVICE, {"json": [1, 2]}, 400, id="not-an-object"),
        pytest.param("post", SERVICE, {"json": {**request_body(), "hook": "order-sign"}}, 400, id="wrong-hook"),
        pytest.param(
            "post", SERVICE, {"json": {**request_body(), "hookInstance": "not-a-uuid"}}, 400, id="hookInstance-not-uuid"
        ),
        pytest.param("post", "/cds-services/unknown", {"json": request_body()}, 404, id="unknown-service"),
        pytest.param("put", SERVICE, {"json": request_body()}, 405, id="method-not-allowed"),
        pytest.param("delete", "/cds-services", {}, 405, id="delete-discovery"),
        pytest.param(
            "post",
            SERVICE,
            {"content": b"x" * (16 * 1024 * 1024 + 1), "headers": {"content-type": "application/json"}},
            413,
            id="over-16-mib",
        ),
        pytest.param(
            "post",
            SERVICE,
            {"content": orjson.dumps(request_body()), "headers": {"content-type": "text/plain"}},
            415,
            id="text-plain",
        ),
        pytest.param("post", SERVICE, {"json": request_body()}, 412, id="data-unobtainable"),
    ],
)
async def test_error_status_with_operation_outcome(
    make_client: Callable[..., Any], method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    async with make_client() as client:
        response = await getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert is_operation_outcome(response.json())


async def test_body_limit_is_configurable(make_client: Callable[..., Any]) -> None:
    async with make_client(settings_for_test(max_body_bytes=2048)) as client:
        response = await client.post(SERVICE, json={**request_body(), "extension": {"pad": "x" * 4096}})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_token_body(expires_in="300"), id="wrong-type-next-to-token"),
        pytest.param(_token_body(token_type="MAC"), id="bad-token-type"),
        pytest.param({**_token_body(), "fhirServer": None}, id="token-without-server"),
        pytest.param({**_token_body(), "hookInstance": CANARY_TOKEN}, id="token-as-hookInstance"),
        pytest.param({**_token_body(), "context": {"userId": CANARY_TOKEN, "patientId": "p1"}}, id="token-as-userId"),
    ],
)
async def test_access_token_never_appears_in_an_error_body(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, body: dict[str, Any]
) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert CANARY_TOKEN not in response.text
    assert CANARY_TOKEN.encode() not in orjson.dumps([c.to_dict() for c in memory_store.calls], default=str)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe\x00{", id="not-utf8"),
        pytest.param(b"\xef\xbb\xbf{}", id="bom"),
        pytest.param(b'{"hook": NaN}', id="nan"),
        pytest.param(b'{"a": Infinity}', id="infinity"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"hook":"patient-view","hook":"order-sign"}', id="duplicate-keys"),
        pytest.param(b'{"n": 1' + b"0" * 100_000 + b"}", id="huge-number"),
        pytest.param(b"", id="empty"),
        pytest.param(b"null", id="null"),
    ],
)
async def test_nasty_bodies_are_4xx_never_500(make_client: Callable[..., Any], raw: bytes) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, content=raw, headers={"content-type": "application/json"})
        feedback = await client.post(f"{SERVICE}/feedback", content=raw, headers={"content-type": "application/json"})
    for answer in (response, feedback):
        assert 400 <= answer.status_code < 500
        assert is_operation_outcome(answer.json())


@pytest.mark.parametrize(
    "prefetch",
    [
        pytest.param({"patient": "Patient/1"}, id="string-value"),
        pytest.param({"observations": {"resourceType": "Bundle", "entry": "x"}}, id="entry-not-array"),
        pytest.param(
            {"observations": {"resourceType": "Bundle", "entry": [1, None, {"resource": 5}]}}, id="garbage-entries"
        ),
        pytest.param(
            {
                "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "yesterday"},
                "conditions": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": {"resourceType": "Condition", "code": 5}}],
                },
                "observations": {"resourceType": "Observation", "valueQuantity": {"value": "abc"}},
                "medications": {"resourceType": "OperationOutcome"},
            },
            id="malformed-resources",
        ),
    ],
)
async def test_malformed_prefetch_is_handled_without_500(
    make_client: Callable[..., Any], prefetch: dict[str, Any]
) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch))
    assert response.status_code in {200, 400, 412}
    if response.status_code != 200:
        assert is_operation_outcome(response.json())


async def test_hook_instance_reuse_is_still_answered(make_client: Callable[..., Any]) -> None:
    body = request_body(
        {
            "patient": {"resourceType": "Patient", "id": "p1"},
            "conditions": None,
            "observations": None,
            "medications": None,
        },
        hookInstance=str(uuid.uuid4()),
    )
    async with make_client() as client:
        first = await client.post(SERVICE, json=body)
        second = await client.post(SERVICE, json=body)
    assert first.status_code == second.status_code == 200


async def test_refused_feedback_calls_are_audited(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    async with make_client() as client:
        response = await client.post(f"{SERVICE}/feedback", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    record = memory_store.calls[-1]
    assert record.http_status == 400
    assert record.reason_class == "feedback:invalid-request"


async def test_unknown_service_is_not_echoed(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        response = await client.post("/cds-services/%3Cscript%3E", json=request_body())
    assert response.status_code == 404
    assert "script" not in response.text


async def test_fhir_server_credentials_are_not_recorded(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    body = request_body(fhirServer="https://user:secret@ehr.example.org:8443/fhir")
    async with make_client() as client:
        await client.post(SERVICE, json=body)
    assert memory_store.calls[-1].fhir_server == "https://ehr.example.org:8443/fhir"


async def test_an_unhandled_error_is_a_500_with_security_headers_and_an_audit_record(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    from hooks.registry import HookCall, HookOutcome, ServiceDefinition, ServiceRegistry

    def broken(call: HookCall) -> HookOutcome:
        raise RuntimeError("bug")

    registry = ServiceRegistry()
    registry.register(
        ServiceDefinition(
            id="broken",
            hook="patient-view",
            title="t",
            description="d",
            prefetch={},
            essential_keys=frozenset(),
            handler=broken,
        )
    )
    async with make_client(registry=registry) as client:
        response = await client.post("/cds-services/broken", json=request_body())
    assert response.status_code == 500
    assert is_operation_outcome(response.json())
    assert response.headers["x-content-type-options"] == "nosniff"
    assert memory_store.calls[-1].reason_class == "internal-error:RuntimeError"


@pytest.mark.parametrize("token", ["tök", "abc\r\nX-Injected: 1", "", "a b", "x" * 9000])
async def test_access_token_outside_rfc6750_syntax_is_400(make_client: Callable[..., Any], token: str) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, json=_token_body(access_token=token))
    assert response.status_code == 400
    assert "access_token" in response.json()["issue"][0]["diagnostics"]
    assert "X-Injected" not in response.text
