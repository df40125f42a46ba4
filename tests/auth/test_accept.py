"""Valid CDS client tokens are accepted (CDS Hooks 2.0 #trusting-cds-clients), the way real clients sign."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from hooks.audit import AuditError, MemoryAuditStore
from hooks.auth.jwks import parse_jwks
from tests.auth.conftest import (
    DISCOVERY_URL,
    EPIC_LIKE_ISS,
    FEEDBACK_URL,
    SANDBOX_LIKE_ISS,
    SERVICE_URL,
    STATIC_ISS,
    TENANT_ISS,
    feedback_body,
    hook_body,
    stub_registry,
    write_trust,
)
from tests.support.cds_client import TOKEN_NOW, JwksServer, SigningKey, bearer, epic_token, sandbox_token, sign

VECTORS = Path(__file__).parents[1] / "fixtures" / "cds-hooks"
SPEC_JWT = (VECTORS / "spec-2.0.1-jwt-example-ES384.txt").read_text().strip()


def _mint(style: str, es_key: SigningKey, rs_key: SigningKey, jwks: JwksServer, aud: str) -> str:
    if style == "sandbox-ES384":
        return sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=aud, jku=jwks.url("/es.json"))
    return epic_token(rs_key, iss=EPIC_LIKE_ISS, aud=aud, jku=jwks.url("/rs.json"))


@pytest.mark.parametrize("style", ["sandbox-ES384", "epic-RS384"])
async def test_valid_tokens_open_discovery_service_and_feedback(
    auth_client: Any, store: MemoryAuditStore, jwks: JwksServer, es_key: SigningKey, rs_key: SigningKey, style: str
) -> None:
    async with auth_client() as client:
        discovery = await client.get("/cds-services", headers=bearer(_mint(style, es_key, rs_key, jwks, DISCOVERY_URL)))
        service = await client.post(
            "/cds-services/stub", json=hook_body(), headers=bearer(_mint(style, es_key, rs_key, jwks, SERVICE_URL))
        )
        feedback = await client.post(
            "/cds-services/stub/feedback",
            json=feedback_body(),
            headers=bearer(_mint(style, es_key, rs_key, jwks, FEEDBACK_URL)),
        )
    assert discovery.status_code == 200
    assert {s["id"] for s in discovery.json()["services"]} == {"stub", "other"}
    assert service.status_code == 200
    assert service.json()["cards"][0]["summary"] == "hi"
    assert feedback.status_code == 200
    assert feedback.json() == {"stored": 1, "duplicates": 0}
    call = store.calls[-1]
    sandbox = style == "sandbox-ES384"
    expected = (SANDBOX_LIKE_ISS, "ES384", es_key.kid) if sandbox else (EPIC_LIKE_ISS, "RS384", rs_key.kid)
    assert (call.iss, call.alg, call.kid) == expected
    assert call.jti
    assert store.feedback[-1].iss == call.iss


async def test_a_token_for_one_endpoint_does_not_open_another(
    auth_client: Any, jwks: JwksServer, es_key: SigningKey
) -> None:
    token = sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=DISCOVERY_URL, jku=jwks.url("/es.json"))
    async with auth_client() as client:
        response = await client.post("/cds-services/stub/feedback", json=feedback_body(), headers=bearer(token))
    assert response.status_code == 401


async def test_aud_may_be_an_array_and_tenant_is_recorded(
    auth_client: Any, store: MemoryAuditStore, jwks: JwksServer, es_key: SigningKey
) -> None:
    token = sandbox_token(
        es_key, iss=TENANT_ISS, aud=["https://elsewhere.test", SERVICE_URL], jku=jwks.url("/tenanted.json"),
        tenant="org-b",
    )
    async with auth_client() as client:
        response = await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))
    assert response.status_code == 200
    assert (store.calls[-1].iss, store.calls[-1].tenant) == (TENANT_ISS, "org-b")


async def test_static_jwks_issuer_without_jku(auth_client: Any, static_key: SigningKey) -> None:
    token = sandbox_token(static_key, iss=STATIC_ISS, aud=SERVICE_URL, jku=None)
    async with auth_client() as client:
        response = await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))
    assert response.status_code == 200


async def test_within_leeway_is_accepted(auth_client: Any, jwks: JwksServer, es_key: SigningKey) -> None:
    now = TOKEN_NOW
    # Expired 30 s ago and issued 30 s "in the future" by a skewed clock: both inside the 60 s leeway.
    expired = sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL, jku=jwks.url("/es.json"),
                            iat=now - 300, exp=now - 30)
    skewed = sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL, jku=jwks.url("/es.json"),
                           iat=now + 30, exp=now + 330)
    async with auth_client() as client:
        for token in (expired, skewed):
            assert (await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))).status_code == 200


async def test_key_rotation_is_picked_up_by_a_forced_refresh(
    tmp_path: Path, auth_client: Any, jwks: JwksServer
) -> None:
    old, new = SigningKey.es384(), SigningKey.es384()
    jwks.publish(old, path="/rotating.json")
    issuer = {"iss": "https://rot.test", "jku": [jwks.url("/rotating.json")]}
    trust = write_trust(tmp_path / "rot.yaml", {"issuers": [issuer]})

    def token(key: SigningKey) -> dict[str, str]:
        return bearer(sandbox_token(key, iss="https://rot.test", aud=SERVICE_URL, jku=jwks.url("/rotating.json")))

    async with auth_client(trust_file=trust) as client:
        assert (await client.post("/cds-services/stub", json=hook_body(), headers=token(old))).status_code == 200
        jwks.publish(new, path="/rotating.json")  # the EHR rotates: only the new kid is served now
        hits = jwks.hits("/rotating.json")
        assert (await client.post("/cds-services/stub", json=hook_body(), headers=token(new))).status_code == 200
        assert jwks.hits("/rotating.json") == hits + 1
        # Still cached after the refresh: no fetch per call.
        assert (await client.post("/cds-services/stub", json=hook_body(), headers=token(new))).status_code == 200
        assert jwks.hits("/rotating.json") == hits + 1


async def test_discovery_auth_modes(auth_client: Any, jwks: JwksServer, es_key: SigningKey) -> None:
    bad = bearer(sign(SigningKey.es384(kid=es_key.kid), {"iss": SANDBOX_LIKE_ISS}, jku=jwks.url("/es.json")))
    async with auth_client(discovery_auth="optional") as client:
        assert (await client.get("/cds-services")).status_code == 200
        assert (await client.get("/cds-services", headers=bad)).status_code == 401  # present, so it must verify
    async with auth_client(discovery_auth="off") as client:
        assert (await client.get("/cds-services", headers=bad)).status_code == 200
    async with auth_client(discovery_auth="required") as client:
        assert (await client.get("/cds-services")).status_code == 401


def test_spec_example_jwt_verifies_against_the_example_jwks_but_is_expired() -> None:
    keys = parse_jwks(json.loads((VECTORS / "spec-2.0.1-jwks-public.json").read_text()))
    key = keys["example-kid"].jwk.key
    audience = "https://cds.example.org/cds-services/some-service"
    claims = jwt.decode(SPEC_JWT, key, algorithms=["ES384"], audience=audience, options={"verify_exp": False})
    assert claims["tenant"] == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(SPEC_JWT, key, algorithms=["ES384"], audience=audience)


async def test_spec_example_jwt_is_rejected_as_expired_by_the_service(
    tmp_path: Path, auth_client: Any, store: MemoryAuditStore
) -> None:
    trust = write_trust(
        tmp_path / "spec.yaml",
        {"issuers": [{"iss": "https://fhir-ehr.example.com/", "jku": ["https://fhir-ehr.example.com/jwk_uri"]}]},
    )
    async with auth_client(
        trust_file=trust, public_base_url="https://cds.example.org", registry=stub_registry("some-service")
    ) as client:
        response = await client.post("/cds-services/some-service", json=hook_body(), headers=bearer(SPEC_JWT))
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "expired"


async def test_replay_cache_outage_is_503_not_401(
    auth_client: Any, store: MemoryAuditStore, jwks: JwksServer, es_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise AuditError("database down")

    monkeypatch.setattr(store, "remember_jti", unavailable)
    token = sandbox_token(es_key, iss="https://ehr.test", aud=SERVICE_URL, jku=jwks.url("/es.json"))
    async with auth_client() as client:
        response = await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token))
    assert response.status_code == 503
    assert store.calls[-1].http_status == 503
    assert store.calls[-1].iss == "https://ehr.test"  # the signature verified


async def test_refused_discovery_is_audited(auth_client: Any, store: MemoryAuditStore) -> None:
    async with auth_client() as client:
        response = await client.get("/cds-services", headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "discovery:malformed-token"
