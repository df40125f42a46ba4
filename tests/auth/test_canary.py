"""Token hygiene (security brief §4.6 target 3): canary tokens never reach logs, audit rows or error bodies.

CDS Hooks best practices: "CDS Services should never store, share, or log the FHIR access token" and
"should never store, share, or log JWTs". A battery of good and bad calls carries a known access token
and known JWTs; afterwards every captured log record (DEBUG, all loggers), the audit rows and, when the
durable store is available, the SQLite database file bytes are searched for them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from tests.auth.conftest import (
    DISCOVERY_URL,
    FEEDBACK_URL,
    SANDBOX_LIKE_ISS,
    SERVICE_URL,
    NeverFetcher,
    feedback_body,
    hook_body,
    stub_registry,
)
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as make_settings
from tests.support.cds_client import JwksServer, SigningKey, bearer, epic_token, sandbox_token

OPAQUE_CANARY = "canary-access-token-6b1f0e9a4c2d"


def _fhir_authorization(access_token: str, **changes: Any) -> dict[str, Any]:
    authorization = {
        "access_token": access_token, "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/Patient.read", "subject": "calcinosis-cds", **changes,
    }
    return {k: v for k, v in authorization.items() if v is not None}


def _store_factory(kind: str, tmp_path: Path) -> tuple[Any, Path | None]:
    if kind == "memory":
        return MemoryAuditStore(), None
    factory = pytest.importorskip("hooks.audit.factory")
    database = tmp_path / "audit.sqlite3"
    settings = make_settings(audit_dsn=f"sqlite:///{database}")
    return factory.build_audit_store(settings), database


def _database_bytes(database: Path | None) -> bytes:
    """The SQLite file and its WAL/journal siblings, where a leaked token would sit on disk."""
    if database is None:
        return b""
    return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_canary_tokens_appear_nowhere(
    store_kind: str,
    tmp_path: Path,
    trust_file: Path,
    jwks: JwksServer,
    es_key: SigningKey,
    rs_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store, database = _store_factory(store_kind, tmp_path)
    settings = make_settings(auth_required=True, trust_file=trust_file, discovery_auth="required", max_body_bytes=4096)
    app = create_app(settings, registry=stub_registry(), audit_store=store, fetcher=NeverFetcher(),
                     clock=lambda: FIXED_NOW)

    def es(aud: str = SERVICE_URL) -> str:
        return sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=aud, jku=jwks.url("/es.json"))

    # An Epic-style access token is itself a JWT: it must be treated as secret as the Authorization JWT.
    jwt_access_token = epic_token(rs_key, iss="https://epic.test", aud="https://fhir.test", jku=None)
    forged = sandbox_token(SigningKey.es384(kid=es_key.kid), iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL,
                           jku=jwks.url("/es.json"))
    sent: list[str] = [OPAQUE_CANARY, jwt_access_token, forged]
    responses = []

    def remember(token: str) -> dict[str, str]:
        sent.append(token)
        return bearer(token)

    with_token = hook_body(fhirServer="https://ehr.test/fhir", fhirAuthorization=_fhir_authorization(OPAQUE_CANARY))
    json_headers = {"Content-Type": "application/json"}
    async with running_client(app) as client:
        post = client.post
        responses += [
            await post("/cds-services/stub", json=with_token, headers=remember(es())),  # valid: 200
            await post("/cds-services/stub", json=hook_body(
                fhirServer="https://ehr.test/fhir", fhirAuthorization=_fhir_authorization(jwt_access_token)),
                headers=remember(es())),
            await post("/cds-services/stub", content=b'{"hook": "patient-view", "fhirAuthorization": {"access_token": "'
                       + OPAQUE_CANARY.encode() + b'"', headers={**json_headers, **remember(es())}),  # malformed
            await post("/cds-services/stub", json=hook_body(
                fhirServer="https://ehr.test/fhir",
                fhirAuthorization=_fhir_authorization(OPAQUE_CANARY, expires_in=None)),
                headers=remember(es())),  # missing field
            await post("/cds-services/stub", json=hook_body(
                fhirServer="https://ehr.test/fhir",
                fhirAuthorization=_fhir_authorization(jwt_access_token, expires_in="300", scope=[OPAQUE_CANARY])),
                headers=remember(es())),  # wrong types
            await post("/cds-services/stub", json={"hook": OPAQUE_CANARY, "hookInstance": jwt_access_token},
                       headers=remember(es())),  # token-valued fields
            await post("/cds-services/stub", json=with_token, headers=bearer(forged)),  # 401 bad signature
            await post("/cds-services/stub", json=with_token, headers=bearer(OPAQUE_CANARY)),  # 401 malformed
            await post("/cds-services/stub", json=with_token, headers=bearer(jwt_access_token)),  # 401 wrong issuer
            await post("/cds-services/nope", json=with_token, headers=remember(es(f"{DISCOVERY_URL}/nope"))),  # 404
            await post("/cds-services/stub", content=orjson.dumps({**with_token, "pad": OPAQUE_CANARY * 200}),
                       headers={**json_headers, **remember(es())}),  # 413
            await post("/cds-services/stub", content=orjson.dumps(with_token),
                       headers={"Content-Type": "text/plain", **remember(es())}),  # 415
            await post("/cds-services/stub/feedback", json=feedback_body(), headers=remember(es(FEEDBACK_URL))),
            await client.get("/cds-services", headers=remember(es(DISCOVERY_URL))),
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 400, 400, 400, 400, 401, 401, 401, 404, 413, 415, 200, 200]

    logged = "\n".join(
        [caplog.text]
        + [f"{r.getMessage()} {r.exc_text or ''} {r.args!r} {r.__dict__!r}" for r in caplog.records]
    )
    bodies = b"\n".join(r.content + repr(dict(r.headers)).encode() for r in responses)
    audit_rows = orjson.dumps(
        [c.to_dict() for c in getattr(store, "calls", [])] + [repr(f) for f in getattr(store, "feedback", [])],
        default=str,
    )
    database_bytes = _database_bytes(database)
    if database is not None:
        assert len(database_bytes) > 0
    for token in sent:
        secret = token.encode()
        # The signature part alone identifies a JWT; check it too, in case something split the token.
        parts = [secret, *(secret.split(b".")[2:3] if secret.count(b".") == 2 else [])]
        for part in parts:
            assert part.decode() not in logged
            assert part not in bodies
            assert part not in audit_rows
            assert part not in database_bytes
