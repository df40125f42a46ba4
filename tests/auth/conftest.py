"""Harness for the trust tests: a stub service behind real JWT verification, keys served on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.models import Card, CdsResponse
from hooks.registry import HookOutcome, ServiceDefinition, ServiceRegistry
from tests.conftest import FIXED_NOW, running_client, test_settings
from tests.support.cds_client import JwksServer, SigningKey

BASE = "https://testserver"
DISCOVERY_URL = f"{BASE}/cds-services"
SERVICE_URL = f"{BASE}/cds-services/stub"
FEEDBACK_URL = f"{SERVICE_URL}/feedback"
OTHER_SERVICE_URL = f"{BASE}/cds-services/other"

SANDBOX_LIKE_ISS = "https://ehr.test"  # ES384, jku on the local JWKS server
EPIC_LIKE_ISS = "https://epic.test/api/FHIR/R4"  # RS384, jku on the local JWKS server
TENANT_ISS = "https://tenanted.test"  # lists tenants
STATIC_ISS = "https://static.test"  # static JWKS in the trust file, tokens without jku
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"


def stub_registry(*service_ids: str) -> ServiceRegistry:
    registry = ServiceRegistry()
    for service_id in service_ids or ("stub", "other"):
        registry.register(
            ServiceDefinition(
                id=service_id,
                hook="patient-view",
                title="t",
                description="d",
                prefetch={"patient": "Patient/{{context.patientId}}"},
                essential_keys=frozenset({"patient"}),
                handler=lambda call: HookOutcome(
                    CdsResponse(cards=[Card(summary="hi", indicator="info", source={"label": "x"})])
                ),
            )
        )
    return registry


def hook_body(**extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}},
        **extra,
    }


def feedback_body() -> dict[str, Any]:
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-21T09:00:00Z"}
    return {"feedback": [item]}


class NeverFetcher:
    """Every stub call carries its prefetch: reaching the FHIR server would be a test bug."""

    async def fetch(self, **kwargs: Any) -> Any:
        raise AssertionError("unexpected FHIR fetch")

    async def follow_next(self, **kwargs: Any) -> Any:
        raise AssertionError("unexpected FHIR fetch")


@pytest.fixture(scope="session")
def es_key() -> SigningKey:
    return SigningKey.es384()


@pytest.fixture(scope="session")
def rs_key() -> SigningKey:
    return SigningKey.rs384()


@pytest.fixture(scope="session")
def static_key() -> SigningKey:
    return SigningKey.es384()


@pytest.fixture(scope="session")
def jwks(es_key: SigningKey, rs_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.publish(es_key, path="/es.json")
        server.publish(rs_key, path="/rs.json")
        server.publish(es_key, path="/tenanted.json")
        yield server


def trust_document(jwks: JwksServer, static_key: SigningKey, **top: Any) -> dict[str, Any]:
    return {
        "issuers": [
            {"iss": SANDBOX_LIKE_ISS, "jku": [jwks.url("/es.json")], "fhir_servers": ["https://ehr.test/fhir"]},
            {"iss": EPIC_LIKE_ISS, "jku": [jwks.url("/rs.json")], "algorithms": ["RS384"]},
            {"iss": TENANT_ISS, "jku": [jwks.url("/tenanted.json")], "tenants": ["org-a", "org-b"]},
            {"iss": STATIC_ISS, "jwks": {"keys": [static_key.public_jwk()]}},
        ],
        **top,
    }


def write_trust(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.fixture
def trust_file(tmp_path: Path, jwks: JwksServer, static_key: SigningKey) -> Path:
    return write_trust(tmp_path / "trust.yaml", trust_document(jwks, static_key))


@pytest.fixture
def store() -> MemoryAuditStore:
    return MemoryAuditStore()


@pytest.fixture
def auth_client(trust_file: Path, store: MemoryAuditStore) -> Any:
    """``async with auth_client(**settings_overrides) as client``: auth required, discovery auth required."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {"auth_required": True, "trust_file": trust_file, "discovery_auth": "required"}
        values.update(overrides)
        registry = values.pop("registry", None) or stub_registry()
        app = create_app(test_settings(**values), registry=registry, audit_store=store, fetcher=NeverFetcher(),
                         clock=lambda: FIXED_NOW)
        async with running_client(app) as client:
            yield client

    return factory
