"""Pinned keys: an issuer with both ``jku`` and ``jwks`` checks tokens whose jku is on its list against the
static set and never fetches the URL. Proven with the CDS Hooks sandbox's real key and tokens signed exactly
as the sandbox signs them (jwt-generator.js), through the README's offline sandbox configuration."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
import yaml

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.settings import Settings
from tests.auth.conftest import SANDBOX_ISS, SANDBOX_JKU, SANDBOX_KID, write_trust
from tests.conftest import FIXED_NOW, running_client
from tests.support.cds_client import TOKEN_NOW, SigningKey, bearer, sandbox_token

ROOT = Path(__file__).parents[2]
VECTORS = ROOT / "tests" / "fixtures" / "cds-hooks"
SANDBOX_TRUST = ROOT / "deploy" / "config" / "trust.sandbox.yaml"
EXAMPLE = json.loads((ROOT / "examples" / "patient-view-request.json").read_text(encoding="utf-8"))
DOCUMENTED = json.loads((ROOT / "examples" / "patient-view-response.json").read_text(encoding="utf-8"))
SERVICE = "/cds-services/calcinosis-assessment"


@pytest.fixture(scope="module")
def sandbox_key() -> SigningKey:
    """The sandbox's published signing key (tests/fixtures/cds-hooks/README.md)."""
    (jwk,) = json.loads((VECTORS / "sandbox-jwk-private-PUBLISHED.json").read_text())["keys"]
    return SigningKey.from_jwk(jwk)


@pytest.fixture
def no_fetch() -> Iterator[respx.Router]:
    """Every outgoing request is answered by respx: the sandbox's JWKS URL must never be asked."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.get(SANDBOX_JKU).mock(return_value=httpx.Response(500))
        yield router


def _readme_sandbox_config() -> tuple[dict[str, Any], dict[str, str]]:
    """The README's offline sandbox set-up: its trust file (YAML block) and its environment (bash block)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**CDS Hooks sandbox (testing only), offline.**"):]
    trust_block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    env_block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert trust_block, "README: the sandbox section has no yaml block"
    assert env_block, "README: the sandbox section has no bash block"
    environment = dict(re.findall(r"^\s*(CDS_[A-Z_]+)=(\S+)", env_block.group(1), flags=re.MULTILINE))
    return yaml.safe_load(trust_block.group(1)), environment


def _settings_from(environment: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {name.removeprefix("CDS_").lower(): value for name, value in environment.items()}
    values["audit_key"] = "test-audit-key"  # the README generates one with $(python3 -c ...)
    values["trust_file"] = ROOT / values["trust_file"]
    values.update(audit_dsn="memory://", **overrides)
    return Settings(**values)


@asynccontextmanager
async def sandbox_app(settings: Settings, store: MemoryAuditStore, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    kwargs.setdefault("clock", lambda: FIXED_NOW)
    async with running_client(create_app(settings, audit_store=store, **kwargs)) as client:
        yield client


def test_the_readme_trust_block_is_the_shipped_trust_file() -> None:
    documented, _ = _readme_sandbox_config()
    assert documented == yaml.safe_load(SANDBOX_TRUST.read_text(encoding="utf-8"))
    (issuer,) = documented["issuers"]
    published = json.loads((VECTORS / "sandbox-jwks.json").read_text())
    assert issuer["jwks"] == published, "the pinned key is the sandbox's real public key"
    assert (issuer["iss"], issuer["jku"]) == (SANDBOX_ISS, [SANDBOX_JKU])


async def test_the_sandbox_works_offline_with_its_key_pinned(
    sandbox_key: SigningKey, no_fetch: respx.Router
) -> None:
    _, environment = _readme_sandbox_config()
    settings = _settings_from(environment)
    base = settings.public_base_url
    store = MemoryAuditStore()

    def token(path: str) -> str:
        return sandbox_token(sandbox_key, iss=SANDBOX_ISS, aud=base + path, jku=SANDBOX_JKU)

    discovery_token = token("/cds-services")
    # Exactly the sandbox's shape: header alg/typ/kid/jku; claims iss, aud, exp = iat + 300, iat, jti.
    assert jwt.get_unverified_header(discovery_token) == {
        "alg": "ES384", "typ": "JWT", "kid": SANDBOX_KID, "jku": SANDBOX_JKU}
    claims = jwt.decode(discovery_token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "exp", "iat", "jti"}
    assert claims["aud"] == "http://127.0.0.1:8080/cds-services"
    assert claims["exp"] - claims["iat"] == 300
    async with sandbox_app(settings, store) as client:
        # The browser's CORS preflight, then discovery with the default CDS_DISCOVERY_AUTH=optional.
        preflight = await client.options("/cds-services", headers={
            "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        discovery = await client.get("/cds-services", headers=bearer(discovery_token))
        service = await client.post(SERVICE, json=EXAMPLE, headers=bearer(token(SERVICE)))
        cards = service.json()["cards"]
        feedback = await client.post(SERVICE + "/feedback", headers=bearer(token(SERVICE + "/feedback")), json={
            "feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-21T09:05:00Z"}]})
    assert preflight.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    assert discovery.status_code == 200
    assert [(s["id"], s["hook"]) for s in discovery.json()["services"]] == [
        ("calcinosis-assessment", "patient-view"), ("calcinosis-medication-safety", "order-select"),
        ("calcinosis-medication-safety", "order-sign")]
    assert service.status_code == 200
    assert [c["summary"] for c in cards] == [c["summary"] for c in DOCUMENTED["cards"]]  # the README's answer
    assert feedback.status_code == 200
    assert feedback.json() == {"stored": 1, "duplicates": 0}
    assert (store.calls[-1].iss, store.calls[-1].kid, store.calls[-1].alg) == (SANDBOX_ISS, SANDBOX_KID, "ES384")
    assert not no_fetch.calls, "the pinned jku was fetched"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"jku": "https://sandbox.cds-hooks.org/other-jwks.json"}, "jku-not-allowed", id="jku-off-list"),
        pytest.param({"kid": "rotated-kid"}, "unknown-kid", id="kid-not-pinned"),
        pytest.param({"key": "other"}, "bad-signature", id="signed-by-another-key"),
        pytest.param({"aud": "http://127.0.0.1:8080/cds-services/other"}, "wrong-audience", id="other-endpoint"),
    ],
)
async def test_pinned_keys_refuse_what_they_do_not_pin(
    sandbox_key: SigningKey, no_fetch: respx.Router, change: dict[str, str], reason: str
) -> None:
    _, environment = _readme_sandbox_config()
    settings = _settings_from(environment)
    key = SigningKey.es384(SANDBOX_KID) if change.get("key") == "other" else sandbox_key
    if "kid" in change:
        key = key.with_kid(change["kid"])
    token = sandbox_token(key, iss=SANDBOX_ISS, aud=change.get("aud", settings.public_base_url + SERVICE),
                          jku=change.get("jku", SANDBOX_JKU))
    store = MemoryAuditStore()
    async with sandbox_app(settings, store) as client:
        response = await client.post(SERVICE, json=EXAMPLE, headers=bearer(token))
    assert response.status_code == 401
    assert store.calls[-1].reason_class == reason
    # Neither an unknown kid nor an unlisted jku turns into a fetch: pinned means fixed.
    assert not no_fetch.calls


async def test_an_ehr_key_pinned_in_production(tmp_path: Path) -> None:
    """Production: the EHR's tokens name its jku; the pinned set answers and nothing is fetched."""
    ehr_key = SigningKey.rs384()
    jku = "https://ehr.example.org/.well-known/jwks.json"
    trust = write_trust(tmp_path / "trust.yaml", {"issuers": [
        {"iss": "https://ehr.example.org", "jku": [jku], "jwks": {"keys": [ehr_key.public_jwk()]},
         "algorithms": ["RS384"]}]})
    settings = Settings(environment="production", public_base_url="https://cds.example.org", trust_file=trust,
                        audit_key="k", audit_dsn=f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    store = MemoryAuditStore()
    with respx.mock(assert_all_called=False) as router:
        route = router.get(jku).mock(return_value=httpx.Response(500))
        async with sandbox_app(settings, store) as client:
            token = sandbox_token(ehr_key, iss="https://ehr.example.org", aud="https://cds.example.org" + SERVICE,
                                  jku=jku, jti=str(uuid.uuid4()))
            response = await client.post(SERVICE, json=EXAMPLE, headers=bearer(token))
    assert response.status_code == 200
    assert not route.called


async def test_tokens_are_judged_by_the_service_clock(sandbox_key: SigningKey, no_fetch: respx.Router) -> None:
    """The verifier reads the clock the app was given, not the wall clock: a day later the token is stale."""
    _, environment = _readme_sandbox_config()
    settings = _settings_from(environment)
    token = sandbox_token(sandbox_key, iss=SANDBOX_ISS, aud=settings.public_base_url + SERVICE, jku=SANDBOX_JKU,
                          now=TOKEN_NOW)
    store = MemoryAuditStore()
    async with sandbox_app(settings, store, clock=lambda: FIXED_NOW + timedelta(days=1)) as client:
        response = await client.post(SERVICE, json=EXAMPLE, headers=bearer(token))
    assert response.status_code == 401
    assert store.calls[-1].reason_class == "expired"
