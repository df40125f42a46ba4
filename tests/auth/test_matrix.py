"""The rejection matrix (security brief §4.6 target 1): every bad token is a 401 with one generic body.

CDS Hooks 2.0 #trusting-cds-clients and the best-practices validation order. Each case also checks the
audit record's reason class, so a case cannot pass by failing for some unrelated reason.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.audit import MemoryAuditStore
from hooks.errors import Unauthorized
from tests.auth.conftest import (
    EPIC_LIKE_ISS,
    OTHER_SERVICE_URL,
    SANDBOX_ISS,
    SANDBOX_JKU,
    SANDBOX_KID,
    SANDBOX_LIKE_ISS,
    SERVICE_URL,
    STATIC_ISS,
    TENANT_ISS,
    hook_body,
    write_trust,
)
from tests.support.cds_client import (
    TOKEN_NOW,
    JwksServer,
    SigningKey,
    bearer,
    hmac_token,
    sandbox_token,
    sign,
    unsigned_token,
)

GENERIC_401 = Unauthorized().body()


@dataclass
class Kit:
    client: httpx.AsyncClient
    jwks: JwksServer
    es_key: SigningKey
    rs_key: SigningKey

    def token(self, **claims: Any) -> str:
        """A valid sandbox-style ES384 token for the stub service, with claim overrides."""
        iss, aud = claims.pop("iss", SANDBOX_LIKE_ISS), claims.pop("aud", SERVICE_URL)
        return sandbox_token(self.es_key, iss=iss, aud=aud, jku=self.jwks.url("/es.json"), **claims)

    def claims(self) -> dict[str, Any]:
        now = TOKEN_NOW
        return {"iss": SANDBOX_LIKE_ISS, "aud": SERVICE_URL, "iat": now, "exp": now + 300, "jti": f"j-{uuid.uuid4()}"}

    async def call(self, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post("/cds-services/stub", json=hook_body(), headers=headers)


Build = Callable[[Kit], Awaitable[dict[str, str]]]


def simple(make: Callable[[Kit], str]) -> Build:
    async def build(kit: Kit) -> dict[str, str]:
        return bearer(make(kit))

    return build


async def _no_header(kit: Kit) -> dict[str, str]:
    return {}


async def _unknown_kid(kit: Kit) -> dict[str, str]:
    assert (await kit.call(bearer(kit.token()))).status_code == 200  # the key set is cached now
    stranger = SigningKey.es384()
    return bearer(sandbox_token(stranger, iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL, jku=kit.jwks.url("/es.json")))


async def _basic_scheme(kit: Kit) -> dict[str, str]:
    return {"Authorization": "Basic dXNlcjpwYXNz"}


async def _replayed(kit: Kit) -> dict[str, str]:
    token = kit.token()
    assert (await kit.call(bearer(token))).status_code == 200
    return bearer(token)


def _tampered(kit: Kit) -> str:
    header, _, signature = kit.token().split(".")
    claims = {**kit.claims(), "tenant": "someone-else"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def _sandbox_in_production(kit: Kit) -> str:
    # Shaped exactly like a sandbox token; its private key is public, so the signature proves nothing.
    key = SigningKey.es384(kid=SANDBOX_KID)
    return sandbox_token(key, iss=SANDBOX_ISS, aud=SERVICE_URL, jku=SANDBOX_JKU)


def _missing(claim: str) -> Build:
    return simple(lambda kit: kit.token(**{claim: None}))


CASES: list[tuple[str, Build, str]] = [
    ("no-header", _no_header, "missing-token"),
    ("alg-none", simple(lambda k: unsigned_token(k.claims(), kid=k.es_key.kid, jku=k.jwks.url("/es.json"))),
     "algorithm-not-allowed"),
    ("hs256-public-key-as-secret",
     simple(lambda k: hmac_token(k.claims(), k.es_key.public_pem(), alg="HS256", kid=k.es_key.kid,
                                 jku=k.jwks.url("/es.json"))), "algorithm-not-allowed"),
    ("hs384-public-key-as-secret",
     simple(lambda k: hmac_token(k.claims(), k.es_key.public_pem(), alg="HS384", kid=k.es_key.kid,
                                 jku=k.jwks.url("/es.json"))), "algorithm-not-allowed"),
    ("wrong-key-right-kid",
     simple(lambda k: sign(SigningKey.es384(kid=k.es_key.kid), k.claims(), jku=k.jwks.url("/es.json"))),
     "bad-signature"),
    ("tampered-payload", simple(_tampered), "bad-signature"),
    ("unknown-kid-after-forced-refresh", _unknown_kid, "unknown-kid"),
    ("unknown-iss", simple(lambda k: k.token(iss="https://attacker.test")), "unknown-issuer"),
    ("jku-not-allow-listed",
     simple(lambda k: sign(k.es_key, k.claims(), jku=k.jwks.url("/attacker.json"))), "jku-not-allowed"),
    ("aud-another-service", simple(lambda k: k.token(aud=OTHER_SERVICE_URL)), "wrong-audience"),
    ("aud-host-header-spoof", simple(lambda k: k.token(aud="http://evil.test/cds-services/stub")), "wrong-audience"),
    ("expired-beyond-leeway",
     simple(lambda k: k.token(iat=TOKEN_NOW - 400, exp=TOKEN_NOW - 61)), "expired"),
    ("iat-in-future-beyond-leeway",
     simple(lambda k: k.token(iat=TOKEN_NOW + 120, exp=TOKEN_NOW + 300)), "issued-in-future"),
    ("lifetime-too-long", simple(lambda k: k.token(exp=TOKEN_NOW + 901)), "lifetime-too-long"),
    ("replayed-jti", _replayed, "replayed-jti"),
    ("missing-iss", _missing("iss"), "missing-claim"),
    ("missing-aud", _missing("aud"), "missing-claim"),
    ("missing-exp", _missing("exp"), "missing-claim"),
    ("missing-iat", _missing("iat"), "missing-claim"),
    ("missing-jti", _missing("jti"), "missing-claim"),
    ("tenant-not-allowed",
     simple(lambda k: sandbox_token(k.es_key, iss=TENANT_ISS, aud=SERVICE_URL, jku=k.jwks.url("/tenanted.json"),
                                    tenant="org-z")), "tenant-not-allowed"),
    ("tenant-missing-for-tenanted-issuer",
     simple(lambda k: sandbox_token(k.es_key, iss=TENANT_ISS, aud=SERVICE_URL, jku=k.jwks.url("/tenanted.json"))),
     "tenant-not-allowed"),
    ("alg-outside-issuer-allow-list",
     simple(lambda k: sandbox_token(k.es_key, iss=EPIC_LIKE_ISS, aud=SERVICE_URL, jku=k.jwks.url("/rs.json"))),
     "algorithm-not-allowed"),
    ("header-without-kid", simple(lambda k: sign(k.es_key, k.claims(), jku=k.jwks.url("/es.json"), kid=None)),
     "bad-header"),
    ("header-typ-not-jwt", simple(lambda k: sign(k.es_key, k.claims(), jku=k.jwks.url("/es.json"), typ="at+jwt")),
     "bad-header"),
    ("malformed-token", simple(lambda k: "not.a.jwt"), "malformed-token"),
    ("malformed-base64", simple(lambda k: "eyJhbGciOiJFUzM4NCJ9.%%%.xyz"), "malformed-token"),
    ("not-bearer-scheme", _basic_scheme, "malformed-token"),
    ("sandbox-token-in-production-profile", simple(_sandbox_in_production), "unknown-issuer"),
]


@pytest.fixture
def production_trust(tmp_path: Path, static_key: SigningKey) -> Path:
    # Production refuses loopback jku URLs and the sandbox issuer, so this profile trusts one static-key EHR.
    issuer = {"iss": STATIC_ISS, "jwks": {"keys": [static_key.public_jwk()]}}
    return write_trust(tmp_path / "prod.yaml", {"issuers": [issuer]})


@pytest.mark.parametrize(("build", "reason"), [pytest.param(b, r, id=i) for i, b, r in CASES])
async def test_every_bad_token_is_a_generic_401(
    auth_client: Any,
    store: MemoryAuditStore,
    jwks: JwksServer,
    es_key: SigningKey,
    rs_key: SigningKey,
    production_trust: Path,
    build: Build,
    reason: str,
    request: pytest.FixtureRequest,
) -> None:
    production = "production" in request.node.callspec.id
    overrides = {"environment": "production", "trust_file": production_trust} if production else {}
    async with auth_client(**overrides) as client:
        kit = Kit(client, jwks, es_key, rs_key)
        headers = await build(kit)
        hits_before = jwks.hits("/es.json")
        response = await kit.call(headers)

    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert response.headers["www-authenticate"] == "Bearer"
    assert store.calls[-1].http_status == 401
    assert store.calls[-1].reason_class == reason
    # An unverified caller is never attributed to an issuer; a replay carries a verified signature, so it is.
    if reason == "replayed-jti":
        assert store.calls[-1].iss == "https://ehr.test"
    else:
        assert store.calls[-1].iss is None
    if reason == "unknown-kid":
        assert jwks.hits("/es.json") == hits_before + 1  # exactly one forced refresh before giving up
    assert jwks.hits("/attacker.json") == 0  # a jku off the allow-list is never fetched
