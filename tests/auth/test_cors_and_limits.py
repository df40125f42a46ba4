"""CORS for browser clients (CDS Hooks 2.0 #cross-origin-resource-sharing) and the per-issuer rate limit."""

from __future__ import annotations

from typing import Any

import pytest

from hooks.app import create_app
from hooks.auth.rate_limit import TokenBucketLimiter
from hooks.errors import TooManyRequests
from tests.auth.conftest import (
    EPIC_LIKE_ISS,
    SANDBOX_LIKE_ISS,
    SERVICE_URL,
    hook_body,
    stub_registry,
)
from tests.conftest import running_client
from tests.conftest import test_settings as make_settings
from tests.support.cds_client import JwksServer, SigningKey, bearer, epic_token, sandbox_token

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
PREFLIGHT = {
    "Origin": SANDBOX_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/stub", "/cds-services/stub/feedback"])
async def test_preflight_from_an_allowed_origin(path: str) -> None:
    app = create_app(make_settings(cors_origins=[SANDBOX_ORIGIN]), registry=stub_registry())
    async with running_client(app) as client:
        response = await client.options(path, headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    methods = set(response.headers["access-control-allow-methods"].replace(" ", "").split(","))
    assert methods == {"GET", "POST", "OPTIONS"}
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_other_origins_get_no_cors_grant() -> None:
    app = create_app(make_settings(cors_origins=[SANDBOX_ORIGIN]), registry=stub_registry())
    async with running_client(app) as client:
        preflight = await client.options("/cds-services/stub", headers={**PREFLIGHT, "Origin": "https://evil.test"})
        simple = await client.get("/cds-services", headers={"Origin": "https://evil.test"})
        allowed = await client.get("/cds-services", headers={"Origin": SANDBOX_ORIGIN})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers
    assert allowed.headers["access-control-allow-origin"] == SANDBOX_ORIGIN


async def test_no_cors_by_default() -> None:
    app = create_app(make_settings(), registry=stub_registry())
    async with running_client(app) as client:
        response = await client.options("/cds-services/stub", headers=PREFLIGHT)
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers


def test_wildcard_origin_is_refused_in_production() -> None:
    with pytest.raises(ValueError, match="refused in production"):
        create_app(make_settings(environment="production", cors_origins=["*"]), registry=stub_registry())


async def test_rate_limit_is_per_issuer(
    auth_client: Any, jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey
) -> None:
    def es() -> dict[str, str]:
        return bearer(sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL, jku=jwks.url("/es.json")))

    async with auth_client(rate_limit_per_minute=3) as client:
        statuses = [(await client.post("/cds-services/stub", json=hook_body(), headers=es())).status_code
                    for _ in range(3)]
        limited = await client.post("/cds-services/stub", json=hook_body(), headers=es())
        other = await client.post(
            "/cds-services/stub", json=hook_body(),
            headers=bearer(epic_token(rs_key, iss=EPIC_LIKE_ISS, aud=SERVICE_URL, jku=jwks.url("/rs.json"))),
        )
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["issue"][0]["code"] == "throttled"
    assert other.status_code == 200  # another issuer is not limited


async def test_anonymous_callers_are_limited_by_address(auth_client: Any) -> None:
    async with auth_client(rate_limit_per_minute=2, discovery_auth="optional") as client:
        statuses = [(await client.get("/cds-services")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_bucket_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("a") == 20  # one token every 20 s at 3/min
    now[0] += 20
    assert limiter.acquire("a") is None
    assert TooManyRequests(20).headers() == {"Retry-After": "20"}
