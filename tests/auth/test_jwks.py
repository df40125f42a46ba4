"""JWKS fetching from an allow-listed jku: cache, cooldown, caps, no redirects (security brief §1.4, §2.3)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.audit import MemoryAuditStore
from hooks.auth.jwks import JwksCache, JwksUnavailable, key_fits_algorithm, parse_jwks
from tests.auth.conftest import SERVICE_URL, hook_body, write_trust
from tests.support.cds_client import JwksServer, SigningKey, bearer, sandbox_token

VECTORS = Path(__file__).parents[1] / "fixtures" / "cds-hooks"
ISS = "https://jwks.test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


async def _call_with(auth_client: Any, tmp_path: Path, jku: str, key: SigningKey, **settings: Any) -> httpx.Response:
    trust = write_trust(tmp_path / "jwks.yaml", {"issuers": [{"iss": ISS, "jku": [jku]}]})
    async with auth_client(trust_file=trust, **settings) as client:
        token = sandbox_token(key, iss=ISS, aud=SERVICE_URL, jku=jku)
        return await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))


async def test_one_fetch_serves_many_calls(auth_client: Any, jwks: JwksServer, es_key: SigningKey) -> None:
    hits = jwks.hits("/es.json")
    async with auth_client() as client:
        for _ in range(5):
            token = sandbox_token(es_key, iss="https://ehr.test", aud=SERVICE_URL, jku=jwks.url("/es.json"))
            assert (await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))).status_code == 200
    assert jwks.hits("/es.json") == hits + 1


async def test_ttl_refresh_cooldown_and_stale_if_error(http: httpx.AsyncClient) -> None:
    key, stranger = SigningKey.es384(), SigningKey.es384()
    clock = FakeClock()
    with JwksServer() as server:
        server.publish(key)
        cache = JwksCache(http, ttl_s=300, cooldown_s=30, allow_loopback_http=True, clock=clock)
        url = server.url()
        assert await cache.key(url, key.kid) is not None
        # Made-up kids: one forced refresh, then nothing until the cooldown has passed.
        assert await cache.key(url, stranger.kid) is None
        assert await cache.key(url, "another-made-up-kid") is None
        assert server.hits() == 2
        clock.now += 31
        assert await cache.key(url, "yet-another") is None
        assert server.hits() == 3
        # TTL expiry refetches; a failing endpoint keeps the last good set for a while, then fails closed.
        server.set_route("/jwks.json", b"boom", status=500)
        clock.now += 301
        assert await cache.key(url, key.kid) is not None
        clock.now += 3600
        with pytest.raises(JwksUnavailable):
            await cache.key(url, key.kid)


async def test_oversized_jwks_is_refused(
    auth_client: Any, store: MemoryAuditStore, jwks: JwksServer, tmp_path: Path
) -> None:
    key = SigningKey.es384()
    padded = {"keys": [key.public_jwk()], "padding": "x" * 70_000}
    jwks.set_route("/big.json", json.dumps(padded).encode())
    response = await _call_with(auth_client, tmp_path, jwks.url("/big.json"), key)
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "jwks-unavailable"


async def test_redirects_are_not_followed(
    auth_client: Any, store: MemoryAuditStore, jwks: JwksServer, tmp_path: Path
) -> None:
    key = SigningKey.es384()
    jwks.publish(key, path="/redirect-target.json")
    jwks.set_route("/redirect.json", b"", status=302, headers={"Location": jwks.url("/redirect-target.json")})
    response = await _call_with(auth_client, tmp_path, jwks.url("/redirect.json"), key)
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "jwks-unavailable"
    assert jwks.hits("/redirect-target.json") == 0


async def test_a_stalling_jwks_endpoint_is_cut_off(
    auth_client: Any, store: MemoryAuditStore, tmp_path: Path
) -> None:
    key = SigningKey.es384()
    with JwksServer() as slow:
        slow.publish(key)
        slow.delay_s = 1.5
        started = time.monotonic()
        response = await _call_with(auth_client, tmp_path, slow.url(), key, jwks_timeout_s=0.3)
        elapsed = time.monotonic() - started
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "jwks-unavailable"
    assert elapsed < 1.2


def test_key_type_must_match_the_algorithm() -> None:
    es, rs = SigningKey.es384(), SigningKey.rs384()
    keys = parse_jwks({"keys": [es.public_jwk(), rs.public_jwk()]})
    assert key_fits_algorithm(keys[es.kid], "ES384")
    assert key_fits_algorithm(keys[rs.kid], "RS384")
    assert not key_fits_algorithm(keys[rs.kid], "ES384")  # an RSA key for an EC algorithm
    assert not key_fits_algorithm(keys[es.kid], "RS384")
    assert not key_fits_algorithm(keys[es.kid], "ES256")  # P-384 key, P-256 algorithm
    undeclared = parse_jwks({"keys": [{k: v for k, v in rs.public_jwk().items() if k != "alg"}]})
    assert key_fits_algorithm(undeclared[rs.kid], "RS384")  # PyJWK's guessed RS256 is not a promise
    encryption = parse_jwks({"keys": [{**es.public_jwk(), "use": "enc"}]})
    assert not key_fits_algorithm(encryption[es.kid], "ES384")


def test_private_keys_published_in_a_jwks_are_ignored() -> None:
    private = json.loads((VECTORS / "spec-2.0.1-jwk-private-EXAMPLE-ONLY.json").read_text())
    assert parse_jwks({"keys": [private]}) == {}
    assert "example-kid" in parse_jwks(json.loads((VECTORS / "spec-2.0.1-jwks-public.json").read_text()))


@pytest.mark.parametrize(
    "odd_key",
    [
        pytest.param({"kty": "OKP", "crv": "X448", "kid": "enc-1", "use": "enc"}, id="unsupported-curve"),
        pytest.param({"kty": "nope", "kid": "x-1"}, id="unknown-kty"),
        pytest.param({"kty": "EC", "crv": "P-384", "kid": "bad-1", "x": "!!", "y": "??"}, id="bad-coordinates"),
    ],
)
async def test_one_unusable_key_in_the_set_costs_nothing_else(
    auth_client: Any, tmp_path: Path, odd_key: dict[str, Any]
) -> None:
    key = SigningKey.es384()
    with JwksServer() as server:
        body = {"keys": [key.public_jwk(), odd_key]}
        server.set_route("/jwks.json", json.dumps(body).encode())
        first = await _call_with(auth_client, tmp_path, server.url(), key)
        assert first.status_code == 200
        assert parse_jwks(body).keys() == {key.kid}
