"""Prefetch decision table (protocol brief §1.4) end to end: app → resolve_prefetch → FHIR client → respx.

Also the token rules of the security brief §2.2 and §2.4: a canary token must never reach logs, responses
or audit records, and a 401/403 is never retried with the same token.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import respx
from fastapi import Request

from hooks.audit import MemoryAuditStore
from hooks.auth import Caller
from hooks.data_access import FetchResult, resolve_prefetch, scope_allows_read
from tests.conftest import test_settings as settings_for
from tests.integration.stub_service import STUB_ID, STUB_TEMPLATES, stub_registry

BASE = "https://ehr.example.org/fhir"
CANARY = "canary-7f3e9b1c2d4a-DO-NOT-LOG"
PATIENT = {"resourceType": "Patient", "id": "p1"}
FHIR_JSON = {"content-type": "application/fhir+json"}
URL = f"/cds-services/{STUB_ID}"


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": r} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def res(kind: str, ident: str) -> dict[str, Any]:
    return {"resourceType": kind, "id": ident}


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers=FHIR_JSON)


FULL_PREFETCH: dict[str, Any] = {
    "patient": PATIENT,
    "conditions": searchset(res("Condition", "c1"), res("Condition", "c2")),
    "observations": searchset(res("Observation", "o1")),
    "medications": searchset(),
}


def body(
    prefetch: dict[str, Any] | None = None,
    *,
    token: str | None = CANARY,
    server: str | None = BASE,
    token_patient: str | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/u1", "patientId": "p1"},
    }
    if server:
        request["fhirServer"] = server
    if token:
        request["fhirAuthorization"] = {
            "access_token": token, "token_type": "Bearer", "expires_in": 30,
            "scope": "patient/*.read", "subject": "calcinosis-cds",
        }
        if token_patient:
            request["fhirAuthorization"]["patient"] = token_patient
    if prefetch is not None:
        request["prefetch"] = prefetch
    return request


def mock_ehr(respx_mock: respx.MockRouter, **responses: Any) -> dict[str, respx.Route]:
    """One route per resource type; a value is a response, a list of them, or a side-effect callable."""
    routes = {}
    defaults = {
        "Patient": ok(PATIENT),
        "Condition": ok(searchset(res("Condition", "c1"), res("Condition", "c2"))),
        "Observation": ok(searchset(res("Observation", "o1"))),
        "MedicationRequest": ok(searchset()),
    }
    defaults.update(responses)
    for kind, response in defaults.items():
        route = respx_mock.get(url__startswith=f"{BASE}/{kind}")
        if callable(response) or isinstance(response, list):
            route.mock(side_effect=response)
        else:
            route.mock(return_value=response)
        routes[kind] = route
    return routes


def summaries(response: httpx.Response) -> list[str]:
    return [card["summary"] for card in response.json()["cards"]]


@pytest.fixture
def client_for(make_client: Callable[..., Any]) -> Callable[..., Any]:
    def factory(**settings: Any) -> Any:
        values: dict[str, Any] = {"fhir_allowed_bases": [BASE], "fhir_search_count": 0}
        values.update(settings)
        return make_client(settings=settings_for(**values), registry=stub_registry())

    return factory


# --------------------------------------------------------------------------- decision table


@respx.mock(assert_all_called=False)
async def test_full_prefetch_makes_no_query(respx_mock: respx.MockRouter, client_for: Any,
                                            memory_store: MemoryAuditStore) -> None:
    routes = mock_ehr(respx_mock)
    async with client_for() as client:
        response = await client.post(URL, json=body(FULL_PREFETCH))
    assert response.status_code == 200
    assert summaries(response) == ["patient: 1", "conditions: 2", "observations: 1", "medications: 0"]
    assert not any(route.called for route in routes.values())
    assert memory_store.calls[-1].token_use == "not-used"


@respx.mock(assert_all_called=False)
async def test_partial_prefetch_fetches_only_the_missing_key(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    routes = mock_ehr(respx_mock)
    prefetch = {k: v for k, v in FULL_PREFETCH.items() if k != "conditions"}
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 200
    assert summaries(response) == ["patient: 1", "conditions: 2", "observations: 1", "medications: 0"]
    assert routes["Condition"].call_count == 1
    assert [k for k, r in routes.items() if r.called] == ["Condition"]
    assert routes["Condition"].calls.last.request.url.params["patient"] == "p1"
    record = memory_store.calls[-1]
    states = {s.key: (s.received, s.fetched, s.obtained, s.resources) for s in record.prefetch}
    assert states["conditions"] == ("missing", True, True, 2)
    assert states["patient"] == ("present", False, True, 1)
    assert [(q.key, q.query, q.outcome) for q in record.queries] == [
        ("conditions", "Condition?patient=p1", "ok")
    ]
    assert record.token_use == "used"


@respx.mock(assert_all_called=False)
async def test_null_means_no_data_and_is_not_requeried(respx_mock: respx.MockRouter, client_for: Any) -> None:
    routes = mock_ehr(respx_mock)
    prefetch = dict(FULL_PREFETCH, conditions=None, medications=None)
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 200
    assert summaries(response)[1] == "conditions: 0"
    assert not any(route.called for route in routes.values())


@respx.mock(assert_all_called=False)
async def test_operation_outcome_prefetch_is_requeried(respx_mock: respx.MockRouter, client_for: Any,
                                                       memory_store: MemoryAuditStore) -> None:
    routes = mock_ehr(respx_mock)
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    outcome_bundle = searchset(failed)
    prefetch = dict(FULL_PREFETCH, observations=failed, conditions=outcome_bundle)
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 200
    assert routes["Observation"].call_count == 1
    assert routes["Condition"].call_count == 1
    received = {s.key: s.received for s in memory_store.calls[-1].prefetch}
    assert received["observations"] == received["conditions"] == "operation-outcome"


@respx.mock(assert_all_called=False)
async def test_all_missing_keys_are_fetched_concurrently(respx_mock: respx.MockRouter, client_for: Any) -> None:
    def slow(response: httpx.Response) -> Callable[[httpx.Request], Any]:
        async def effect(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.3)
            return response

        return effect

    mock_ehr(
        respx_mock,
        Patient=slow(ok(PATIENT)),
        Condition=slow(ok(searchset())),
        Observation=slow(ok(searchset())),
        MedicationRequest=slow(ok(searchset())),
    )
    started = time.monotonic()
    async with client_for() as client:
        response = await client.post(URL, json=body())
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 0.9  # four 0.3 s queries in sequence would take 1.2 s


@respx.mock(assert_all_called=False)
async def test_prefetch_next_link_is_followed_through_fhir_server(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    page2 = respx_mock.get(f"{BASE}/Observation", params={"patient": "p1", "_offset": "1"}).mock(
        return_value=ok(searchset(res("Observation", "o2")))
    )
    prefetch = dict(
        FULL_PREFETCH,
        observations=searchset(res("Observation", "o1"), next_url=f"{BASE}/Observation?patient=p1&_offset=1"),
    )
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 200
    assert summaries(response)[2] == "observations: 2"
    assert page2.calls.last.request.headers["authorization"] == f"Bearer {CANARY}"


@respx.mock(assert_all_called=False)
async def test_unreadable_next_page_makes_an_essential_key_412(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(500))
    prefetch = dict(
        FULL_PREFETCH,
        observations=searchset(res("Observation", "o1"), next_url="Observation?patient=p1&_offset=1"),
    )
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 412
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "'observations'" in diagnostics
    assert "further pages could not be read" in diagnostics


@respx.mock(assert_all_called=False)
async def test_next_link_without_fhir_server_is_unobtainable(respx_mock: respx.MockRouter, client_for: Any) -> None:
    prefetch = dict(FULL_PREFETCH, observations=searchset(res("Observation", "o1"), next_url="Observation?x=1"))
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch, token=None, server=None))
    assert response.status_code == 412
    assert "no fhirServer" in response.json()["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------- failures and 412


@respx.mock(assert_all_called=False)
async def test_essential_key_timing_out_gives_412_naming_it(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return ok(searchset())

    mock_ehr(respx_mock, Observation=stall)
    started = time.monotonic()
    async with client_for(fhir_deadline_s=0.4, fhir_request_timeout_s=0.25) as client:
        response = await client.post(URL, json=body())
    assert time.monotonic() - started < 1.0
    assert response.status_code == 412
    assert response.headers["content-type"].startswith("application/fhir+json")
    issue = response.json()["issue"][0]
    assert "'observations'" in issue["diagnostics"]
    assert issue["expression"] == ["prefetch.observations"]
    record = memory_store.calls[-1]
    assert record.http_status == 412
    assert [q.outcome for q in record.queries if q.key == "observations"] == ["timeout", "deadline"]


@respx.mock(assert_all_called=False)
async def test_optional_key_failing_still_answers_with_what_it_has(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    routes = mock_ehr(respx_mock, MedicationRequest=httpx.Response(503))
    async with client_for() as client:
        response = await client.post(URL, json=body())
    assert response.status_code == 200
    assert summaries(response) == ["patient: 1", "conditions: 2", "observations: 1", "medications: 0"]
    assert routes["MedicationRequest"].call_count == 2  # one retry for a 5xx


@respx.mock(assert_all_called=False)
async def test_401_gives_412_no_retry_and_token_rejected(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    routes = mock_ehr(
        respx_mock, **{k: httpx.Response(401) for k in ("Patient", "Condition", "Observation", "MedicationRequest")}
    )
    async with client_for() as client:
        response = await client.post(URL, json=body())
    assert response.status_code == 412
    assert all(route.call_count == 1 for route in routes.values())
    record = memory_store.calls[-1]
    assert record.token_use == "rejected"
    assert {q.outcome for q in record.queries} == {"rejected"}


@respx.mock(assert_all_called=False)
async def test_open_server_is_queried_without_a_token(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    routes = mock_ehr(respx_mock)
    async with client_for() as client:
        response = await client.post(URL, json=body(token=None))
    assert response.status_code == 200
    assert all("authorization" not in route.calls.last.request.headers for route in routes.values())
    assert memory_store.calls[-1].token_use == "none"


@respx.mock(assert_all_called=False)
async def test_fhir_server_not_on_the_allow_list_gives_412_and_sends_nothing(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(PATIENT))
    async with client_for(fhir_allowed_bases=["https://other.example.org/fhir"]) as client:
        response = await client.post(URL, json=body())
    assert response.status_code == 412
    assert "not an allowed FHIR base" in response.json()["issue"][0]["diagnostics"]
    assert not anywhere.called


class TrustedCaller:
    """A verifier whose issuer's trust-file entry lists the EHR's FHIR base."""

    async def verify(self, request: Request, endpoint_url: str, *, required: bool) -> Caller:
        return Caller(authenticated=True, iss="https://ehr.example.org", fhir_servers=(BASE,))


@respx.mock(assert_all_called=False)
async def test_trust_file_fhir_servers_extend_the_allow_list(
    respx_mock: respx.MockRouter, make_client: Callable[..., Any]
) -> None:
    mock_ehr(respx_mock)
    settings = settings_for(fhir_allowed_bases=[], fhir_search_count=0)
    async with make_client(settings=settings, registry=stub_registry(), verifier=TrustedCaller()) as client:
        response = await client.post(URL, json=body())
    assert response.status_code == 200


# --------------------------------------------------------------------------- fhirAuthorization.patient (§2.2 point 2)


@respx.mock(assert_all_called=False)
async def test_token_for_another_patient_is_not_used_and_missing_data_gives_412(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(PATIENT))
    async with client_for() as client:
        response = await client.post(URL, json=body(token_patient="someone-else"))
    assert response.status_code == 412
    assert "fhirAuthorization.patient does not match" in response.json()["issue"][0]["diagnostics"]
    assert not anywhere.called
    assert memory_store.calls[-1].token_use == "not-used"


@respx.mock(assert_all_called=False)
async def test_token_for_another_patient_is_not_needed_with_full_prefetch(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(PATIENT))
    async with client_for() as client:
        response = await client.post(URL, json=body(FULL_PREFETCH, token_patient="someone-else"))
    assert response.status_code == 200
    assert not anywhere.called


# --------------------------------------------------------------------------- the canary token


@respx.mock(assert_all_called=False)
async def test_canary_token_never_reaches_logs_responses_or_audit(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return ok(searchset())

    caplog.set_level(logging.DEBUG)  # root: every logger, httpx and httpcore included
    for name in ("httpx", "httpcore", "calcinosis_cds", "calcinosis_cds.fhir"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    responses: list[httpx.Response] = []
    async with client_for(fhir_deadline_s=0.5, fhir_request_timeout_s=0.2) as client:
        mock_ehr(respx_mock)
        responses.append(await client.post(URL, json=body()))  # success, token used
        respx_mock.reset()
        respx_mock.routes.clear()
        mock_ehr(respx_mock, Observation=stall, Condition=httpx.Response(401), MedicationRequest=httpx.Response(500))
        responses.append(await client.post(URL, json=body()))  # timeout, 401, 5xx
        responses.append(await client.post(URL, json=body(server="https://evil.example.org/fhir")))
        broken = body()
        del broken["fhirAuthorization"]["expires_in"]  # FastAPI's default 422 would echo the token
        responses.append(await client.post(URL, json=broken))
        responses.append(await client.post(URL, content=orjson.dumps(body())[:-3],
                                           headers={"content-type": "application/json"}))
    assert [r.status_code for r in responses] == [200, 412, 412, 400, 400]
    assert any(r.name.startswith("httpx") or r.name.startswith("httpcore") for r in caplog.records)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert CANARY not in logged
    for response in responses:
        assert CANARY not in response.text
        assert CANARY not in str(response.headers)
    audit = orjson.dumps([record.to_dict() for record in memory_store.calls], default=str).decode()
    assert CANARY not in audit
    assert len(memory_store.calls) == len(responses)


# --------------------------------------------------------------------------- resolve_prefetch alone


class SleepyFetcher:
    """Ignores the deadline on purpose: resolve_prefetch must still stop at it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def fetch(self, *, key: str, query: str, **_: Any) -> FetchResult:
        self.calls.append(query)
        await asyncio.sleep(5)
        return FetchResult([], [])

    async def follow_next(self, *, key: str, next_url: str, **_: Any) -> FetchResult:
        self.calls.append(next_url)
        await asyncio.sleep(5)
        return FetchResult([], [])


async def test_resolve_prefetch_enforces_the_deadline_on_any_fetcher() -> None:
    fetcher = SleepyFetcher()
    started = time.monotonic()
    resolved = await resolve_prefetch(
        prefetch={"patient": PATIENT}, templates=STUB_TEMPLATES, context={"patientId": "p1"},
        fhir_server=BASE, access_token=None, fetcher=fetcher, allowed_bases=(BASE,),
        deadline=time.monotonic() + 0.1,
    )
    assert time.monotonic() - started < 0.6
    assert len(fetcher.calls) == 3
    assert resolved.keys["patient"].obtained
    assert not resolved.keys["conditions"].obtained
    assert resolved.keys["conditions"].failure == "the FHIR deadline passed"


async def test_unfillable_template_is_unobtainable_without_a_query() -> None:
    fetcher = SleepyFetcher()
    resolved = await resolve_prefetch(
        prefetch=None, templates={"encounter": "Encounter/{{context.encounterId}}"}, context={"patientId": "p1"},
        fhir_server=BASE, access_token=None, fetcher=fetcher, allowed_bases=(BASE,),
        deadline=time.monotonic() + 1,
    )
    assert not fetcher.calls
    assert resolved.keys["encounter"].failure == "template token could not be filled from context"


async def test_token_for_another_patient_is_refused_before_any_query() -> None:
    fetcher = SleepyFetcher()
    resolved = await resolve_prefetch(
        prefetch=None, templates=STUB_TEMPLATES, context={"patientId": "p1"}, fhir_server=BASE,
        access_token=CANARY, fetcher=fetcher, allowed_bases=(BASE,), deadline=time.monotonic() + 1,
        authorized_patient="p2",
    )
    assert not fetcher.calls
    assert resolved.token_use == "not-used"
    assert all(not key.obtained for key in resolved.keys.values())


# --------------------------------------------------------------------------- token expiry (§2.2 point 3)


@respx.mock(assert_all_called=False)
async def test_an_expiring_token_is_never_used(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(PATIENT))
    request = body()
    request["fhirAuthorization"]["expires_in"] = 1  # less than the 2 s safety margin
    async with client_for() as client:
        response = await client.post(URL, json=request)
    assert response.status_code == 412
    assert "expires" in response.json()["issue"][0]["diagnostics"]
    assert not anywhere.called
    assert memory_store.calls[-1].token_use == "not-used"


# --------------------------------------------------------------------------- scopes (§2.2 point 4)


@pytest.mark.parametrize(
    ("scope", "resource_type", "allowed"),
    [
        ("patient/*.read", "Observation", True),
        ("user/Patient.read user/Observation.read", "Observation", True),
        ("user/Patient.read user/Observation.read", "Condition", False),
        ("patient/Observation.rs", "Observation", True),
        ("patient/Observation.rs?category=laboratory", "Observation", True),
        ("patient/Condition.c", "Condition", False),
        ("patient/Condition.write", "Condition", False),
        ("system/*.*", "MedicationRequest", True),
        ("Observation.Read (R4) Patient.Read (R4)", "Observation", None),
        ("launch openid", "Observation", None),
    ],
)
def test_scope_reading(scope: str, resource_type: str, allowed: bool | None) -> None:
    assert scope_allows_read(scope, resource_type) is allowed


@respx.mock(assert_all_called=False)
async def test_a_key_the_scopes_do_not_grant_is_not_queried(
    respx_mock: respx.MockRouter, client_for: Any
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(PATIENT))
    request = body()
    request["fhirAuthorization"]["scope"] = "user/Patient.read user/Observation.read"
    async with client_for() as client:
        response = await client.post(URL, json=request)
    assert response.status_code == 412
    assert "does not grant Condition read" in response.text
    assert not any("Condition" in str(call.request.url) for call in anywhere.calls)


# --------------------------------------------------------------------------- security review fixes


class OneKeyRaises:
    """``conditions`` raises at once; the other keys answer a little later."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    async def fetch(self, *, key: str, query: str, **_: Any) -> FetchResult:
        if key == "conditions":
            raise RuntimeError("a fetcher bug")
        await asyncio.sleep(0.05)
        self.finished.append(key)
        return FetchResult([res("Thing", key)], [])

    async def follow_next(self, *, key: str, next_url: str, **_: Any) -> FetchResult:
        raise AssertionError("not used")


async def test_one_key_raising_fails_that_key_only() -> None:
    fetcher = OneKeyRaises()
    resolved = await resolve_prefetch(
        prefetch={"patient": PATIENT}, templates=STUB_TEMPLATES, context={"patientId": "p1"},
        fhir_server=BASE, access_token=None, fetcher=fetcher, allowed_bases=(BASE,),
        deadline=time.monotonic() + 2,
    )
    assert not resolved.keys["conditions"].obtained
    assert resolved.keys["conditions"].failure == "the FHIR query failed (RuntimeError)"
    # The siblings ran to their end inside resolve_prefetch and their data is used.
    assert sorted(fetcher.finished) == ["medications", "observations"]
    assert resolved.keys["observations"].resources == [res("Thing", "observations")]


@respx.mock(assert_all_called=False)
async def test_malformed_outcome_from_the_fhir_server_never_gives_500(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore
) -> None:
    routes = mock_ehr(
        respx_mock,
        Observation=ok(searchset(res("Observation", "o1"), {"resourceType": "OperationOutcome", "issue": 5})),
        MedicationRequest=ok(searchset({"resourceType": "OperationOutcome", "issue": [{"severity": ["x"]}]})),
    )
    async with client_for() as client:
        response = await client.post(URL, json=body())
        assert response.status_code == 412
        assert "'observations'" in response.json()["issue"][0]["diagnostics"]
        # The breaker saw answers, not an outage: the next call reaches the server again.
        routes["Observation"].mock(return_value=ok(searchset(res("Observation", "o1"))))
        routes["MedicationRequest"].mock(return_value=ok(searchset()))
        again = await client.post(URL, json=body())
    assert again.status_code == 200
    assert routes["Observation"].call_count == 2
    assert memory_store.calls[-2].token_use == "used"


class IgnoresItsDeadline:
    """The real client given a far deadline: only resolve_prefetch's own timeout stops it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def fetch(self, **arguments: Any) -> FetchResult:
        arguments["deadline"] = time.monotonic() + 30
        result: FetchResult = await self.inner.fetch(**arguments)
        return result

    async def follow_next(self, **arguments: Any) -> FetchResult:
        raise AssertionError("not used")


@respx.mock(assert_all_called=False)
async def test_a_fetch_cut_by_the_outer_deadline_keeps_its_queries_and_token_use(
    respx_mock: respx.MockRouter,
) -> None:
    from hooks.fhir_client import HttpxFhirFetcher

    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return ok(searchset())

    mock_ehr(respx_mock, Observation=[httpx.Response(503), stall])
    inner = HttpxFhirFetcher(settings_for(fhir_allowed_bases=[BASE], fhir_search_count=0, fhir_request_timeout_s=10))
    try:
        started = time.monotonic()
        resolved = await resolve_prefetch(
            prefetch={k: v for k, v in FULL_PREFETCH.items() if k != "observations"}, templates=STUB_TEMPLATES,
            context={"patientId": "p1"}, fhir_server=BASE, access_token=CANARY, fetcher=IgnoresItsDeadline(inner),
            allowed_bases=(BASE,), deadline=time.monotonic() + 0.2,
        )
        assert time.monotonic() - started < 1.0
    finally:
        await inner.aclose()
    assert resolved.keys["observations"].failure == "the FHIR deadline passed"
    # The only fetch was cut, yet what it sent is on record: the 503 attempt and the retry still in flight.
    assert resolved.token_use == "used"
    assert [(q.key, q.status, q.outcome) for q in resolved.queries] == [
        ("observations", 503, "error"), ("observations", None, "deadline")
    ]


# --------------------------------------------------------------------------- template tokens (issue 16 item 8)


@pytest.mark.parametrize("value", [".", "..", "p1&_id=p2", "p1/..", "", "x" * 65, True])
def test_a_token_value_that_is_not_a_fhir_id_leaves_the_key_unobtainable(value: Any) -> None:
    from hooks.data_access import fill_template

    assert fill_template("Patient/{{context.patientId}}", {"patientId": value}) is None
    assert fill_template("Condition?patient={{context.patientId}}", {"patientId": value}) is None


def test_fhir_id_token_values_are_filled() -> None:
    from hooks.data_access import fill_template

    assert fill_template("Condition?patient={{context.patientId}}", {"patientId": "a-1.B"}) == "Condition?patient=a-1.B"
    assert fill_template("Practitioner/{{userPractitionerId}}", {"userId": "Practitioner/u1"}) == "Practitioner/u1"


# --------------------------------------------------------------------------- issue 11: long records


class RecordingFetcher:
    """Answers every query with ``answer`` and records what was asked (queries and next links)."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = answer
        self.queries: list[str] = []
        self.next_links: list[str] = []

    async def fetch(self, *, key: str, query: str, **_: Any) -> FetchResult:
        self.queries.append(query)
        return FetchResult(list(self.answer), [])

    async def follow_next(self, *, key: str, next_url: str, **_: Any) -> FetchResult:
        self.next_links.append(next_url)
        return FetchResult(list(self.answer), [])


def dated(ident: str, days_ago: int) -> dict[str, Any]:
    moment = (NOW - timedelta(days=days_ago)).isoformat()
    return {"resourceType": "Observation", "id": ident, "status": "final", "effectiveDateTime": moment,
            "subject": {"reference": "Patient/p1"}}


NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
LOOK_BACK = {"observations": (NOW - timedelta(days=365), "date")}
OBS_TEMPLATE = {"observations": "Observation?patient={{context.patientId}}&_sort=-date"}


async def _resolve_observations(page: dict[str, Any] | None, fetcher: RecordingFetcher) -> Any:
    return await resolve_prefetch(
        prefetch={"observations": page} if page is not None else None, templates=OBS_TEMPLATE,
        context={"patientId": "p1"}, fhir_server=BASE, access_token=None, fetcher=fetcher, allowed_bases=(BASE,),
        deadline=time.monotonic() + 2, complete_after=LOOK_BACK,
    )


async def test_the_service_asks_for_the_look_back_window_only_and_says_so() -> None:
    fetcher = RecordingFetcher([dated("o1", 10)])
    resolved = await _resolve_observations(None, fetcher)
    assert fetcher.queries == ["Observation?patient=p1&_sort=-date&date=ge2025-11-21"]
    data = resolved.keys["observations"]
    assert data.obtained
    assert data.complete_by == "query limited to date >= 2025-11-21 (the longest look-back)"


async def test_a_newest_first_page_reaching_past_the_look_back_is_complete_without_its_next_pages() -> None:
    fetcher = RecordingFetcher([])
    page = searchset(dated("o1", 3), dated("o2", 200), dated("o3", 400), next_url=f"{BASE}/Observation?page=2")
    resolved = await _resolve_observations(page, fetcher)
    assert fetcher.queries == []
    assert fetcher.next_links == []
    data = resolved.keys["observations"]
    assert [r["id"] for r in data.resources or ()] == ["o1", "o2", "o3"]
    assert data.complete_by == ("newest-first list reaches 2025-10-17, before 2025-11-21 (the longest look-back): "
                                "later pages not read")


@pytest.mark.parametrize("page", [
    searchset(dated("o1", 3), dated("o2", 200), next_url=f"{BASE}/Observation?page=2"),  # stops inside the year
    searchset(dated("o1", 400), dated("o2", 3), next_url=f"{BASE}/Observation?page=2"),  # _sort was ignored
], ids=["short-page", "not-newest-first"])
async def test_otherwise_the_window_is_asked_and_merged_with_the_page_each_result_once(page: dict[str, Any]) -> None:
    fetcher = RecordingFetcher([dated("o2", 200), dated("o9", 300)])
    resolved = await _resolve_observations(page, fetcher)
    assert fetcher.next_links == []  # ten years of pages are never walked for a one-year look-back
    assert fetcher.queries == ["Observation?patient=p1&_sort=-date&date=ge2025-11-21"]
    data = resolved.keys["observations"]
    assert sorted(r["id"] for r in data.resources or ()) == ["o1", "o2", "o9"]
    assert data.fetched
    assert data.complete_by is not None
    assert data.complete_by.startswith("query limited to date")


async def test_keys_without_a_look_back_still_follow_the_next_link() -> None:
    fetcher = RecordingFetcher([res("Condition", "c2")])
    resolved = await resolve_prefetch(
        prefetch={"conditions": searchset(res("Condition", "c1"), next_url=f"{BASE}/Condition?page=2")},
        templates={"conditions": "Condition?patient={{context.patientId}}"}, context={"patientId": "p1"},
        fhir_server=BASE, access_token=None, fetcher=fetcher, allowed_bases=(BASE,),
        deadline=time.monotonic() + 2, complete_after=LOOK_BACK,
    )
    assert fetcher.next_links == [f"{BASE}/Condition?page=2"]
    assert [r["id"] for r in resolved.keys["conditions"].resources or ()] == ["c1", "c2"]
    assert resolved.keys["conditions"].complete_by is None
