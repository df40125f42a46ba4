"""``hooks.fhir_client``: allow-list, validation, limits, retry, deadline and breaker (security brief §2.3, §4.2)."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from typing import Any

import httpx
import orjson
import pytest
import respx

from hooks.data_access import FetchResult
from hooks.fhir_client import (
    CircuitBreaker,
    HttpxFhirFetcher,
    base_allowed,
    normalise_base,
    origin_of,
    within_base,
)
from tests.conftest import test_settings as settings_for

BASE = "https://ehr.example.org/fhir"
TOKEN = "tok-unit-0123456789"
FHIR_JSON = {"content-type": "application/fhir+json"}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def obs(n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{n}", "status": "final"}


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers=FHIR_JSON)


def make_fetcher(**overrides: Any) -> HttpxFhirFetcher:
    values: dict[str, Any] = {"fhir_allowed_bases": [BASE], "fhir_search_count": 0}
    values.update(overrides)
    return HttpxFhirFetcher(settings_for(**values))


async def fetch(
    fetcher: HttpxFhirFetcher,
    query: str,
    *,
    token: str | None = TOKEN,
    server: str = BASE,
    within_s: float = 5.0,
) -> FetchResult:
    try:
        return await fetcher.fetch(
            key="k", fhir_server=server, query=query, access_token=token,
            deadline=time.monotonic() + within_s, allowed_bases=tuple(fetcher.settings.fhir_allowed_bases),
        )
    finally:
        await fetcher.aclose()


# --------------------------------------------------------------------------- allow-list


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://EHR.example.org/fhir/", "https://ehr.example.org:443/fhir"),
        ("https://ehr.example.org:443/fhir", "https://ehr.example.org:443/fhir"),
        ("http://127.0.0.1:8081/fhir", "http://127.0.0.1:8081/fhir"),
        ("https://ehr.example.org", "https://ehr.example.org:443"),
        ("https://user:pw@ehr.example.org/fhir", None),
        ("https://ehr.example.org/fhir?x=1", None),
        # httpx resolves dot segments before sending, so the check applies to the path actually requested.
        ("https://ehr.example.org/fhir/../admin", "https://ehr.example.org:443/admin"),
        ("https://ehr.example.org/fhir/%2e%2e/admin", None),
        ("https://ehr.example.org/fhir%2fadmin", None),
        # Path parameters do not hide dot segments: Tomcat, Jetty and Spring resolve "..;" as "..".
        ("https://ehr.example.org/fhir/..;/admin", None),
        ("https://ehr.example.org/fhir/..;jsessionid=x/admin", None),
        ("https://ehr.example.org/fhir/%2e%2e;/admin", None),
        ("https://ehr.example.org/fhir/..%3b/admin", None),
        ("https://ehr.example.org/fhir/.;x/Patient", None),
        ("https://ehr.example.org/fhir/%252e%252e/admin", None),  # decoded twice downstream
        ("https://ehr.example.org/fhir/a%25b", None),
        ("https://ehr.example.org/fhir;v=4/Patient", "https://ehr.example.org:443/fhir;v=4/Patient"),
        ("https://@ehr.example.org/fhir", None),  # empty user info is still user info
        ("https://user@ehr.example.org/fhir", None),
        ("ftp://ehr.example.org/fhir", None),
        ("not a url", None),
    ],
)
def test_normalise_base(url: str, expected: str | None) -> None:
    assert normalise_base(url) == expected


@pytest.mark.parametrize(
    ("server", "allowed", "loopback", "expected"),
    [
        (BASE, (BASE,), False, True),
        ("https://ehr.example.org:443/fhir/", (BASE,), False, True),
        ("https://ehr.example.org/fhir/tenant-a", (BASE,), False, True),  # path prefix
        ("https://ehr.example.org/fhirx", (BASE,), False, False),  # prefix on a segment boundary only
        ("https://ehr.example.org/other", (BASE,), False, False),
        ("https://ehr.example.org:8443/fhir", (BASE,), False, False),  # port is part of the origin
        ("https://evil.example.org/fhir", (BASE,), False, False),
        ("https://ehr.example.org.evil.net/fhir", (BASE,), False, False),
        ("http://ehr.example.org/fhir", ("http://ehr.example.org/fhir",), True, False),  # http off loopback
        ("http://127.0.0.1:9/fhir", ("http://127.0.0.1:9/fhir",), False, False),  # loopback http needs the flag
        ("http://127.0.0.1:9/fhir", ("http://127.0.0.1:9/fhir",), True, True),
        ("http://localhost:9/fhir", ("http://localhost:9/fhir",), True, True),
        (BASE, (), False, False),
    ],
)
def test_base_allowed(server: str, allowed: tuple[str, ...], loopback: bool, expected: bool) -> None:
    assert (base_allowed(server, allowed, allow_loopback_http=loopback) is not None) is expected


def test_within_base_keeps_next_links_on_the_base() -> None:
    base = "https://ehr.example.org:443/fhir"
    assert within_base("https://ehr.example.org/fhir/Observation?_offset=20", base)
    assert not within_base("https://evil.example.org/fhir/Observation", base)
    assert not within_base("https://ehr.example.org/fhir/../admin", base)
    assert not within_base("https://ehr.example.org/fhirx/Observation", base)
    assert not within_base("https://ehr.example.org/fhir/..;/admin", base)
    assert not within_base("https://ehr.example.org/fhir/%2e%2e;/admin?x=1", base)
    assert not within_base("https://ehr.example.org/fhir/%252e%252e/admin", base)
    assert not within_base("https://u:p@ehr.example.org/fhir/Observation", base)
    assert not within_base("https://@ehr.example.org/fhir/Observation", base)
    # %25 stays allowed in the query, where it is ordinary data.
    assert within_base("https://ehr.example.org/fhir/Observation?code=a%25b", base)


@respx.mock(assert_all_called=False)
async def test_base_not_allowed_sends_nothing(respx_mock: respx.MockRouter) -> None:
    evil = respx_mock.get(url__startswith="https://evil.example.org").mock(return_value=ok(searchset()))
    result = await fetch(make_fetcher(), "Observation?patient=p1", server="https://evil.example.org/fhir")
    assert result.resources is None
    assert "not an allowed" in (result.failure or "")
    assert not evil.called
    assert [q.outcome for q in result.queries] == ["not-allowed"]
    assert not result.token_sent


@respx.mock(assert_all_called=False)
async def test_plain_http_off_loopback_is_refused_even_if_listed(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith="http://ehr.example.org").mock(return_value=ok(searchset()))
    fetcher = make_fetcher(fhir_allowed_bases=["http://ehr.example.org/fhir"], fhir_allow_loopback_http=True)
    result = await fetch(fetcher, "Observation?patient=p1", server="http://ehr.example.org/fhir")
    assert result.resources is None
    assert not route.called


@respx.mock(assert_all_called=False)
async def test_template_value_cannot_walk_out_of_the_base(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.route().mock(return_value=ok({"resourceType": "Patient", "id": "x"}))
    result = await fetch(make_fetcher(), "Patient/../../admin")
    assert result.resources is None
    assert not route.called


# --------------------------------------------------------------------------- success paths


@respx.mock
async def test_read_sends_the_bearer_token_and_returns_the_resource(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/Patient/p1").mock(return_value=ok({"resourceType": "Patient", "id": "p1"}))
    result = await fetch(make_fetcher(), "Patient/p1")
    assert result.resources == [{"resourceType": "Patient", "id": "p1"}]
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/fhir+json"
    assert result.token_sent
    [query] = result.queries
    assert (query.resource_type, query.query, query.status, query.count, query.outcome) == (
        "Patient", "Patient/p1", 200, 1, "ok"
    )


@respx.mock
async def test_open_server_gets_no_authorization_header(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/Patient/p1").mock(return_value=ok({"resourceType": "Patient", "id": "p1"}))
    result = await fetch(make_fetcher(), "Patient/p1", token=None)
    assert result.resources is not None
    assert "authorization" not in route.calls.last.request.headers
    assert not result.token_sent


@respx.mock
async def test_search_count_is_added_to_searches_only(respx_mock: respx.MockRouter) -> None:
    search = respx_mock.get(f"{BASE}/Condition", params={"patient": "p1", "_count": "50"}).mock(
        return_value=ok(searchset())
    )
    result = await fetch(make_fetcher(fhir_search_count=50), "Condition?patient=p1")
    assert result.resources == []
    assert search.called
    assert result.queries[0].query == "Condition?patient=p1&_count=50"


@respx.mock
async def test_paging_follows_relative_and_absolute_next_links(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        side_effect=[
            ok(searchset(obs(1), next_url="Observation?patient=p1&_offset=1")),
            ok(searchset(obs(2), next_url=f"{BASE}/Observation?patient=p1&_offset=2")),
            ok(searchset(obs(3))),
        ]
    )
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert [r["id"] for r in result.resources or ()] == ["o1", "o2", "o3"]
    assert route.call_count == 3
    assert all(c.request.headers["authorization"] == f"Bearer {TOKEN}" for c in route.calls)
    assert [q.query for q in result.queries][1:] == [
        "Observation?patient=p1&_offset=1",
        "Observation?patient=p1&_offset=2",
    ]


@respx.mock
async def test_page_cap_makes_the_key_unobtainable(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=ok(searchset(obs(1), next_url="Observation?patient=p1&_offset=1"))
    )
    result = await fetch(make_fetcher(fhir_page_cap=3), "Observation?patient=p1")
    assert result.resources is None
    assert "more than 3 pages" in (result.failure or "")
    assert route.call_count == 3


@respx.mock(assert_all_called=False)
async def test_next_link_to_another_host_is_not_followed(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=ok(searchset(obs(1), next_url="https://evil.example.org/steal?page=2"))
    )
    evil = respx_mock.get(url__startswith="https://evil.example.org").mock(return_value=ok(searchset()))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert "leaves the fhirServer base" in (result.failure or "")
    assert not evil.called


@respx.mock
async def test_follow_next_continues_an_ehr_prefetch_bundle(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/Observation", params={"_offset": "1"}).mock(return_value=ok(searchset(obs(2))))
    fetcher = make_fetcher()
    try:
        result = await fetcher.follow_next(
            key="observations", fhir_server=BASE, next_url=f"{BASE}/Observation?_offset=1", access_token=TOKEN,
            deadline=time.monotonic() + 5, allowed_bases=(BASE,),
        )
    finally:
        await fetcher.aclose()
    assert [r["id"] for r in result.resources or ()] == ["o2"]
    assert route.called


@respx.mock
async def test_informational_outcome_entries_are_dropped(respx_mock: respx.MockRouter) -> None:
    info = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=ok(searchset(obs(1), info)))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert [r["id"] for r in result.resources or ()] == ["o1"]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("response", "outcome", "reason"),
    [
        (httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}, headers=FHIR_JSON),
         "error", "OperationOutcome"),
        (httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []}, headers=FHIR_JSON),
         "error", "404"),
        (httpx.Response(200, json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR_JSON),
         "error", "searchset"),
        (httpx.Response(200, content=b"{not json", headers=FHIR_JSON), "error", "invalid JSON"),
        (httpx.Response(200, json=[1, 2], headers=FHIR_JSON), "error", "not a FHIR resource"),
        (httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
         "bad-content-type", "content type"),
        (httpx.Response(302, headers={"location": "https://evil.example.org/x"}), "error", "redirected"),
        (httpx.Response(200, json=searchset({
            "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "too-costly"}],
        }), headers=FHIR_JSON), "error", "error OperationOutcome"),
    ],
)
@respx.mock(assert_all_called=False)
async def test_unusable_answers_are_failures(
    respx_mock: respx.MockRouter, response: httpx.Response, outcome: str, reason: str
) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=response)
    evil = respx_mock.get(url__startswith="https://evil.example.org").mock(return_value=ok(searchset()))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert reason in (result.failure or "")
    assert [q.outcome for q in result.queries] == [outcome]
    assert route.call_count == 1  # none of these is retried
    assert not evil.called  # a redirect is never followed


@respx.mock
async def test_read_answered_with_another_type_is_a_failure(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/Patient/p1").mock(return_value=ok({"resourceType": "Practitioner", "id": "p1"}))
    result = await fetch(make_fetcher(), "Patient/p1")
    assert result.resources is None


@pytest.mark.parametrize("declare_length", [True, False])
@respx.mock
async def test_oversize_response_is_cut_off(respx_mock: respx.MockRouter, declare_length: bool) -> None:
    big = b'{"resourceType":"Bundle","type":"searchset","entry":[' + b" " * 4096 + b"]}"

    async def chunks() -> Any:
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    headers = dict(FHIR_JSON)
    if declare_length:
        headers["content-length"] = str(len(big))
        response = httpx.Response(200, content=big, headers=headers)
    else:
        response = httpx.Response(200, stream=httpx.ByteStream(big), headers=headers)
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=response)
    result = await fetch(make_fetcher(fhir_max_response_bytes=1024), "Observation?patient=p1")
    assert result.resources is None
    assert [q.outcome for q in result.queries] == ["too-large"]


@respx.mock
async def test_401_is_never_retried_and_marks_the_token_rejected(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(401))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert result.token_rejected
    assert route.call_count == 1
    assert [q.outcome for q in result.queries] == ["rejected"]


@respx.mock
async def test_403_without_a_token_is_a_failure_but_no_token_was_rejected(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(403))
    result = await fetch(make_fetcher(), "Observation?patient=p1", token=None)
    assert result.resources is None
    assert not result.token_rejected


@respx.mock
async def test_timeout_is_retried_once_within_the_deadline(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        side_effect=[httpx.ReadTimeout("slow"), ok(searchset(obs(1)))]
    )
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert [r["id"] for r in result.resources or ()] == ["o1"]
    assert route.call_count == 2
    assert [q.outcome for q in result.queries] == ["timeout", "ok"]


@respx.mock
async def test_5xx_is_retried_once_then_fails(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(503))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert route.call_count == 2
    assert [(q.status, q.outcome) for q in result.queries] == [(503, "error"), (503, "error")]


@respx.mock
async def test_stalled_server_is_cut_at_the_deadline(respx_mock: respx.MockRouter) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return ok(searchset())

    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(side_effect=stall)
    started = time.monotonic()
    result = await fetch(make_fetcher(fhir_request_timeout_s=0.2), "Observation?patient=p1", within_s=0.35)
    elapsed = time.monotonic() - started
    assert result.resources is None
    assert elapsed < 0.6
    # The first attempt hits the request timeout, the retry is cut by what remains of the deadline.
    assert [q.outcome for q in result.queries] == ["timeout", "deadline"]


async def test_no_request_once_the_deadline_has_passed() -> None:
    result = await fetch(make_fetcher(), "Patient/p1", within_s=-1)
    assert [q.outcome for q in result.queries] == ["deadline"]
    assert not result.token_sent


# --------------------------------------------------------------------------- circuit breaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, reset_s=30, clock=clock)
    assert breaker.allow("b")
    breaker.record("b", failed=True)
    breaker.record("b", failed=False)  # a success in between resets the count
    breaker.record("b", failed=True)
    assert breaker.state("b") == "closed"
    breaker.record("b", failed=True)
    assert breaker.state("b") == "open"
    assert not breaker.allow("b")
    assert breaker.allow("other")  # one breaker per base
    clock.now += 30
    assert breaker.state("b") == "half-open"
    assert breaker.allow("b")  # the probe
    assert not breaker.allow("b")  # only one probe at a time
    breaker.record("b", failed=True)
    assert breaker.state("b") == "open"  # a failed probe re-opens for another reset period
    clock.now += 30
    assert breaker.allow("b")
    breaker.record("b", failed=False)
    assert breaker.state("b") == "closed"
    assert breaker.allow("b")


@respx.mock
async def test_breaker_short_circuits_a_dead_server_and_recovers(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Patient").mock(
        side_effect=[httpx.ConnectError("down"), httpx.ConnectError("down"), ok({"resourceType": "Patient", "id": "p"})]
    )
    clock = FakeClock()
    fetcher = HttpxFhirFetcher(
        settings_for(fhir_allowed_bases=[BASE], fhir_breaker_failures=2, fhir_breaker_reset_s=30), clock=clock
    )

    async def once() -> FetchResult:
        return await fetcher.fetch(
            key="patient", fhir_server=BASE, query="Patient/p", access_token=TOKEN,
            deadline=clock.now + 5, allowed_bases=(BASE,),
        )

    try:
        first = await once()  # two attempts (one retry): the breaker opens
        assert [q.outcome for q in first.queries] == ["error", "error"]
        assert route.call_count == 2
        second = await once()
        assert [q.outcome for q in second.queries] == ["circuit-open"]
        assert "circuit breaker open" in (second.failure or "")
        assert route.call_count == 2  # nothing sent while open
        clock.now += 31
        third = await once()  # half-open probe succeeds and closes the breaker
        assert third.resources == [{"resourceType": "Patient", "id": "p"}]
        assert fetcher.breaker.state(fetcher._allowed(BASE, (BASE,)) or "") == "closed"
    finally:
        await fetcher.aclose()


# --------------------------------------------------------------------------- security review fixes


@pytest.mark.parametrize(
    "next_url",
    [
        f"{BASE}/..;/admin",
        "..;/admin/users",
        f"{BASE}/%2e%2e;/admin",
        f"{BASE}/%252e%252e/admin",
        "https://user:pw@ehr.example.org/fhir/Observation?page=2",
        "http://[::1",  # not even a URL: a failure, not an exception
    ],
)
@respx.mock(assert_all_called=False)
async def test_next_link_escaping_through_path_parameters_is_not_followed(
    respx_mock: respx.MockRouter, next_url: str
) -> None:
    first = respx_mock.get(f"{BASE}/Observation", params={"patient": "p1"}).mock(
        return_value=ok(searchset(obs(1), next_url=next_url))
    )
    anywhere = respx_mock.route().mock(return_value=ok(searchset()))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert "leaves the fhirServer base" in (result.failure or "")
    assert first.call_count == 1
    assert not anywhere.called


@pytest.mark.parametrize(
    "next_url", [f"{BASE}/..;/admin", f"{BASE}/%2e%2e;/admin", "https://@ehr.example.org/fhir/Observation"]
)
@respx.mock(assert_all_called=False)
async def test_follow_next_refuses_an_ehr_next_link_out_of_the_base(
    respx_mock: respx.MockRouter, next_url: str
) -> None:
    anywhere = respx_mock.route().mock(return_value=ok(searchset()))
    fetcher = make_fetcher()
    try:
        result = await fetcher.follow_next(
            key="observations", fhir_server=BASE, next_url=next_url, access_token=TOKEN,
            deadline=time.monotonic() + 5, allowed_bases=(BASE,),
        )
    finally:
        await fetcher.aclose()
    assert result.resources is None
    assert not anywhere.called


MALFORMED_OUTCOMES = [
    {"resourceType": "OperationOutcome", "issue": 5},
    {"resourceType": "OperationOutcome", "issue": [{"severity": ["error"], "code": "x"}]},
    {"resourceType": "OperationOutcome", "issue": [{"severity": {"a": 1}}]},
    {"resourceType": "OperationOutcome", "issue": [7]},
    {"resourceType": "OperationOutcome", "issue": [{"code": "processing"}]},  # severity is 1..1
]


@pytest.mark.parametrize("outcome", MALFORMED_OUTCOMES)
@respx.mock
async def test_malformed_outcome_entry_is_a_bad_response(respx_mock: respx.MockRouter, outcome: Any) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=ok(searchset(obs(1), outcome)))
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert "malformed OperationOutcome" in (result.failure or "")
    assert [q.outcome for q in result.queries] == ["error"]
    assert route.call_count == 1  # a bad body is not retried


def breaker_fetcher(clock: FakeClock, **overrides: Any) -> HttpxFhirFetcher:
    values: dict[str, Any] = {"fhir_allowed_bases": [BASE], "fhir_breaker_failures": 1, "fhir_breaker_reset_s": 30}
    values.update(overrides)
    return HttpxFhirFetcher(settings_for(**values), clock=clock)


async def fetch_at(fetcher: HttpxFhirFetcher, clock: FakeClock, query: str, token: str | None = TOKEN) -> FetchResult:
    return await fetcher.fetch(
        key="k", fhir_server=BASE, query=query, access_token=token, deadline=clock.now + 5, allowed_bases=(BASE,),
    )


def breaker_state(fetcher: HttpxFhirFetcher) -> str:
    return fetcher.breaker.state(origin_of(BASE))


@pytest.mark.parametrize(
    "probe_answer",
    [
        ok(searchset(obs(1), MALFORMED_OUTCOMES[0])),
        ok(searchset(obs(1), MALFORMED_OUTCOMES[1])),
        ok(searchset(obs(1), MALFORMED_OUTCOMES[3])),
        # int("²") used to raise out of the fetch.
        httpx.Response(200, content=b'{"resourceType": "Bundle"}',
                       headers=[(b"content-type", b"application/fhir+json"), (b"content-length", "²".encode())]),
    ],
)
@respx.mock
async def test_half_open_probe_never_stays_stuck(respx_mock: respx.MockRouter, probe_answer: httpx.Response) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        side_effect=[httpx.ConnectError("down"), probe_answer, ok(searchset(obs(2)))]
    )
    clock = FakeClock()
    fetcher = breaker_fetcher(clock)
    try:
        opened = await fetch_at(fetcher, clock, "Observation?patient=p1")
        assert [q.outcome for q in opened.queries] == ["error", "circuit-open"]  # threshold 1: the retry is refused
        assert breaker_state(fetcher) == "open"
        clock.now += 31
        probe = await fetch_at(fetcher, clock, "Observation?patient=p1")
        assert probe.resources is None
        assert [q.outcome for q in probe.queries] == ["error"]
        # The server answered: a bad body is a verdict of "available", the breaker closes.
        assert breaker_state(fetcher) == "closed"
        after = await fetch_at(fetcher, clock, "Observation?patient=p1")
        assert [r["id"] for r in after.resources or ()] == ["o2"]
        assert route.call_count == 3
    finally:
        await fetcher.aclose()


async def test_probe_is_released_whatever_the_request_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    fetcher = breaker_fetcher(clock)
    base = origin_of(BASE)
    fetcher.breaker.record(base, failed=True)
    clock.now += 31

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("anything at all")

    monkeypatch.setattr(fetcher, "_request", broken)
    try:
        result = await fetch_at(fetcher, clock, "Patient/p1")
        assert result.resources is None
        assert "KeyError" in (result.failure or "")
        assert fetcher.breaker.allow(base)  # not stuck half-open: the next request may go
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize(
    "refusal",
    [httpx.LocalProtocolError("Illegal header value"), httpx.UnsupportedProtocol("no such scheme")],
)
@respx.mock
async def test_locally_refused_request_is_not_retried_nor_held_against_the_server(
    respx_mock: respx.MockRouter, refusal: Exception
) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Patient").mock(
        side_effect=[refusal, ok({"resourceType": "Patient", "id": "p1"})]
    )
    clock = FakeClock()
    fetcher = breaker_fetcher(clock)
    try:
        refused = await fetch_at(fetcher, clock, "Patient/p1", token="bad\r\ntoken")
        assert refused.resources is None
        assert f"could not be sent ({type(refusal).__name__})" in (refused.failure or "")
        assert route.call_count == 1  # no retry
        assert not refused.token_sent
        assert breaker_state(fetcher) == "closed"  # threshold 1, yet not opened
        other = await fetch_at(fetcher, clock, "Patient/p1")
        assert other.resources == [{"resourceType": "Patient", "id": "p1"}]
    finally:
        await fetcher.aclose()


@respx.mock(assert_all_called=False)
async def test_non_ascii_token_fails_the_key_without_a_request(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Patient").mock(return_value=ok({"resourceType": "Patient"}))
    clock = FakeClock()
    fetcher = breaker_fetcher(clock)
    try:
        result = await fetch_at(fetcher, clock, "Patient/p1", token="tök-ü")
        assert result.resources is None
        assert result.failure == "the request could not be sent (UnicodeEncodeError)"
        assert "tök" not in str(result.queries)
        assert not result.token_sent
        assert not route.called
        assert breaker_state(fetcher) == "closed"
    finally:
        await fetcher.aclose()


@respx.mock
async def test_pool_timeout_is_not_held_against_the_server(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Patient").mock(
        side_effect=[httpx.PoolTimeout("pool full"), ok({"resourceType": "Patient", "id": "p1"})]
    )
    clock = FakeClock()
    fetcher = breaker_fetcher(clock)
    try:
        full = await fetch_at(fetcher, clock, "Patient/p1")
        assert full.resources is None
        assert "local pool" in (full.failure or "")
        assert route.call_count == 1
        assert not full.token_sent
        assert breaker_state(fetcher) == "closed"
        assert (await fetch_at(fetcher, clock, "Patient/p1")).resources is not None
    finally:
        await fetcher.aclose()


@respx.mock
async def test_requests_in_flight_per_base_are_bounded(respx_mock: respx.MockRouter) -> None:
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return ok(searchset(obs(1)))

    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(side_effect=slow)
    fetcher = HttpxFhirFetcher(settings_for(fhir_allowed_bases=[BASE], fhir_search_count=0), connections_per_origin=2)
    try:
        results = await asyncio.gather(*(
            fetcher.fetch(key=f"k{n}", fhir_server=BASE, query=f"Observation?n={n}", access_token=TOKEN,
                          deadline=time.monotonic() + 5, allowed_bases=(BASE,))
            for n in range(5)
        ))
    finally:
        await fetcher.aclose()
    assert all(r.resources is not None for r in results)
    assert route.call_count == 5
    assert peak == 2


@respx.mock
async def test_slot_wait_past_the_budget_is_not_held_against_the_server(respx_mock: respx.MockRouter) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return ok(searchset())

    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(side_effect=stall)
    fetcher = HttpxFhirFetcher(
        settings_for(fhir_allowed_bases=[BASE], fhir_search_count=0, fhir_request_timeout_s=5,
                     fhir_breaker_failures=1),
        connections_per_origin=1,
    )
    try:
        first, second = await asyncio.gather(*(
            fetcher.fetch(key=f"k{n}", fhir_server=BASE, query=f"Observation?n={n}", access_token=TOKEN,
                          deadline=time.monotonic() + within, allowed_bases=(BASE,))
            for n, within in ((1, 5.0), (2, 0.2))
        ))
        assert first.resources == []
        assert second.resources is None
        assert "too many queries already in flight" in (second.failure or "")
        assert breaker_state(fetcher) == "closed"
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "GZIP", "identity, gzip"])
@respx.mock
async def test_compressed_response_is_refused(respx_mock: respx.MockRouter, encoding: str) -> None:
    raw = orjson.dumps(searchset(obs(1)))
    body = zlib.compress(raw) if encoding == "deflate" else gzip.compress(raw)
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, content=body, headers={**FHIR_JSON, "content-encoding": encoding})
    )
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert result.resources is None
    assert result.failure == "compressed response refused"


@respx.mock
async def test_identity_content_encoding_is_accepted(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, content=orjson.dumps(searchset(obs(1))),
                                    headers={**FHIR_JSON, "content-encoding": "identity"})
    )
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert [r["id"] for r in result.resources or ()] == ["o1"]


@respx.mock
async def test_non_ascii_digit_content_length_is_ignored_not_fatal(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, content=orjson.dumps(searchset(obs(1))),
                                    headers=[(b"content-type", b"application/fhir+json"),
                                             (b"content-length", "²".encode())])
    )
    result = await fetch(make_fetcher(), "Observation?patient=p1")
    assert [r["id"] for r in result.resources or ()] == ["o1"]


@pytest.mark.parametrize(
    ("query", "sent"),
    [
        ("Condition?patient=p1&x_count=5", "Condition?patient=p1&x_count=5&_count=50"),
        ("Condition?note=a_count=5", "Condition?note=a_count=5&_count=50"),
        ("Condition?patient=p1&_count=10", "Condition?patient=p1&_count=10"),
        ("Condition?_count=10&patient=p1", "Condition?_count=10&patient=p1"),
        ("Condition?%5Fcount=10", "Condition?%5Fcount=10"),
    ],
)
@respx.mock
async def test_count_is_recognised_by_parameter_name(respx_mock: respx.MockRouter, query: str, sent: str) -> None:
    respx_mock.get(url__startswith=f"{BASE}/Condition").mock(return_value=ok(searchset()))
    result = await fetch(make_fetcher(fhir_search_count=50), query)
    assert result.queries[0].query == sent


# --------------------------------------------------------------------------- issue 11: query encoding


async def test_system_bar_and_spaces_are_percent_encoded_on_the_wire(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(return_value=ok(searchset(obs(1))))
    result = await fetch(make_fetcher(), "Observation?patient=p1&code=http://loinc.org|2160-0,17861-6&note=a b")
    assert result.resources == [obs(1)]
    sent = route.calls.last.request.url.raw_path.decode()
    # RFC 3986 has no "|" in a query; gateways refuse it. Commas, colons and slashes stay readable.
    assert sent.endswith("?patient=p1&code=http://loinc.org%7C2160-0,17861-6&note=a%20b")
    assert "|" not in sent


async def test_a_servers_own_escapes_in_a_next_link_are_not_encoded_twice(respx_mock: respx.MockRouter) -> None:
    first = searchset(obs(1), next_url=f"{BASE}/Observation?patient=p1&code=http://loinc.org%7C2160-0&_offset=1")
    route = respx_mock.get(url__startswith=f"{BASE}/Observation").mock(
        side_effect=[ok(first), ok(searchset(obs(2)))])
    result = await fetch(make_fetcher(), "Observation?patient=p1&code=http://loinc.org|2160-0")
    assert [r["id"] for r in result.resources or ()] == ["o1", "o2"]
    second = route.calls[1].request.url.raw_path.decode()
    assert "%7C2160-0" in second
    assert "%257C" not in second
