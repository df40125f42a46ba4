"""The trust file: what it accepts, what it refuses at start-up, and the docs' examples (docs/security.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.app import create_app
from hooks.auth.trust import TrustConfigError, load_trust_file, parse_trust
from tests.auth.conftest import SANDBOX_ISS, SANDBOX_JKU, stub_registry
from tests.conftest import running_client
from tests.conftest import test_settings as make_settings

DOCS = Path(__file__).parents[2] / "docs" / "security.md"
EHR = {"iss": "https://ehr.example.org", "jku": ["https://ehr.example.org/.well-known/jwks.json"]}
SANDBOX = {"iss": SANDBOX_ISS, "jku": [SANDBOX_JKU], "algorithms": ["ES384"]}


def test_yaml_and_json_files_load_the_same(tmp_path: Path) -> None:
    document = {"issuers": [{**EHR, "tenants": ["t1"], "fhir_servers": ["https://ehr.example.org/fhir"]}]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "t.json").write_text(json.dumps(document))
    from_yaml = load_trust_file(tmp_path / "t.yaml", environment="production")
    from_json = load_trust_file(tmp_path / "t.json", environment="production")
    assert from_yaml == from_json
    issuer = from_yaml.issuers["https://ehr.example.org"]
    assert issuer.algorithms == ("ES384", "RS384")
    assert issuer.max_lifetime_s == 900
    assert issuer.tenants == frozenset({"t1"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"algorithms": ["none"]}, "never none or HMAC", id="alg-none"),
        pytest.param({"algorithms": ["HS256"]}, "never none or HMAC", id="hs256"),
        pytest.param({"algorithms": ["ES384", "HS384"]}, "never none or HMAC", id="hs384-mixed-in"),
        pytest.param({"algorithms": []}, "never none or HMAC", id="empty-algorithms"),
        pytest.param({"jku": ["http://ehr.example.org/jwks.json"]}, "must be https", id="http-jku"),
        pytest.param({"jku": ["http://127.0.0.1:9/jwks.json"]}, "must be https", id="loopback-jku-in-production"),
        pytest.param({"tenant": ["t1"]}, "unknown keys", id="typo-widens-trust"),
        pytest.param({"max_lifetime_s": 7200}, "max_lifetime_s", id="lifetime-over-an-hour"),
        pytest.param({"jku": []}, "give 'jku'", id="no-key-source"),
    ],
)
def test_weakening_files_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TrustConfigError, match=re.escape(message)):
        parse_trust({"issuers": [{**EHR, **change}]}, environment="production")


def test_loopback_http_jku_only_in_development_and_test() -> None:
    local = {"iss": "https://local.test", "jku": ["http://127.0.0.1:8765/jwks.json"]}
    assert parse_trust({"issuers": [local]}, environment="test").issuers
    assert parse_trust({"issuers": [local]}, environment="development").issuers
    with pytest.raises(TrustConfigError):
        parse_trust({"issuers": [{**local, "jku": ["http://10.0.0.1/jwks.json"]}]}, environment="test")


def test_production_refuses_the_public_sandbox_key_unless_explicitly_allowed() -> None:
    with pytest.raises(TrustConfigError, match="allow_test_issuers"):
        parse_trust({"issuers": [SANDBOX]}, environment="production")
    # The same public key under another iss and kid is still a key anyone can sign with.
    sandbox_jwks = json.loads((Path(__file__).parents[1] / "fixtures" / "cds-hooks" / "sandbox-jwks.json").read_text())
    renamed = {"iss": "https://renamed.test", "jwks": {"keys": [{**sandbox_jwks["keys"][0], "kid": "innocent"}]}}
    with pytest.raises(TrustConfigError, match="allow_test_issuers"):
        parse_trust({"issuers": [renamed]}, environment="production")
    assert parse_trust({"issuers": [SANDBOX], "allow_test_issuers": True}, environment="production").issuers
    assert parse_trust({"issuers": [SANDBOX]}, environment="development").issuers


async def test_auth_required_without_trust_file_refuses_to_start() -> None:
    app = create_app(make_settings(auth_required=True), registry=stub_registry())
    with pytest.raises(TrustConfigError, match="CDS_TRUST_FILE is not set: set it to the trust file"):
        async with running_client(app):
            pass


async def test_production_with_sandbox_trust_file_refuses_to_start(tmp_path: Path) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump({"issuers": [SANDBOX]}))
    app = create_app(make_settings(environment="production", auth_required=True, trust_file=trust,
                                   audit_dsn=f"sqlite:///{tmp_path}/audit.sqlite3"),
                     registry=stub_registry())
    with pytest.raises(TrustConfigError, match="allow_test_issuers"):
        async with running_client(app):
            pass


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def test_every_trust_file_example_in_the_docs_loads() -> None:
    blocks = [b for b in _yaml_blocks(DOCS.read_text(encoding="utf-8")) if "issuers:" in b]
    assert len(blocks) >= 3
    for block in blocks:
        document = yaml.safe_load(block)
        environment = "development" if "sandbox.cds-hooks.org" in block else "production"
        assert parse_trust(document, environment=environment).issuers
