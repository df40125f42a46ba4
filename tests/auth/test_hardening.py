"""Hardening around the trust boundary: dev-mode refusal, server options, headers, body cap, log redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import hooks.logging_setup
from hooks.app import create_app
from hooks.cli import main
from hooks.http_protocol import HeadCappedHttpToolsProtocol
from hooks.logging_setup import JsonFormatter, RedactingFilter, configure_logging
from hooks.settings import get_settings
from tests.auth.conftest import SANDBOX_LIKE_ISS, SERVICE_URL, hook_body, stub_registry
from tests.conftest import running_client
from tests.conftest import test_settings as make_settings
from tests.support.cds_client import JwksServer, SigningKey, bearer, sandbox_token

JWT_CANARY = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJodHRwczovL2V4YW1wbGUifQ.c2lnbmF0dXJlLWNhbmFyeQ"
TOKEN_CANARY = "opaque-canary-9d8c7b"


@pytest.fixture
def serve_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Runs ``calcinosis-cds serve`` up to the server itself: the runtime is really built (trust file, audit
    store), then ``uvicorn.Server.serve`` records the server's configuration instead of binding a socket."""
    import uvicorn

    captured: dict[str, Any] = {}

    async def serve(server: uvicorn.Server, sockets: Any = None) -> None:
        runtime = server.config.app.state.runtime
        captured.update(vars(server.config), runtime=runtime)
        for close in reversed(runtime.closers):  # what the lifespan does at shutdown
            await close()

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    # configure_logging would replace pytest's log capture handlers on the root logger.
    monkeypatch.setattr(hooks.logging_setup, "configure_logging", lambda *a, **k: None)
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump({"issuers": [{"iss": "https://ehr.test",
                                                  "jwks": {"keys": [SigningKey.es384().public_jwk()]}}]}))
    for name, value in {"CDS_AUDIT_KEY": "k", "CDS_PUBLIC_BASE_URL": "https://cds.example.org",
                        "CDS_TRUST_FILE": str(trust), "CDS_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield captured
    get_settings.cache_clear()


def test_development_mode_refuses_a_non_loopback_bind(
    serve_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDS_ENVIRONMENT", "development")
    assert main(["serve", "--host", "0.0.0.0", "--port", "8080"]) == 2  # noqa: S104 (the point of the test)
    assert "not a loopback address" in capsys.readouterr().err
    assert serve_env == {}  # the server never started


def test_development_mode_on_loopback_starts_loudly(
    serve_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CDS_ENVIRONMENT", "development")
    assert main(["serve", "--host", "127.0.0.1", "--port", "8080"]) == 0
    assert any("DEVELOPMENT MODE" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # Server options that bound slow or oversized clients and hide the server banner.
    assert serve_env["timeout_keep_alive"] == 5
    assert serve_env["http"] is HeadCappedHttpToolsProtocol  # httptools with the request-head cap
    assert serve_env["server_header"] is False
    assert serve_env["lifespan"] == "on"
    # The service's own limit answers overload (audited OperationOutcome), not uvicorn's plain-text 503.
    assert serve_env["limit_concurrency"] is None


def test_the_banner_tells_the_truth_in_test_with_a_key_set(
    serve_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CDS_ENVIRONMENT", "test")
    monkeypatch.setenv("CDS_AUTH_REQUIRED", "false")
    monkeypatch.setenv("CDS_AUDIT_KEY", "a-real-key-set-by-the-operator")
    assert main(["serve", "--host", "127.0.0.1", "--port", "8080"]) == 0
    banner = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "TEST MODE: authentication is OFF" in banner
    assert "DEVELOPMENT" not in banner
    assert "development key" not in banner


def test_no_banner_when_authentication_is_on_and_the_key_is_real(
    serve_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CDS_ENVIRONMENT", "production")
    assert main(["serve", "--host", "127.0.0.1", "--port", "8080"]) == 0
    assert not any("*****" in r.getMessage() for r in caplog.records)


def test_production_auth_on_may_bind_any_address(serve_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_ENVIRONMENT", "production")
    assert main(["serve", "--host", "0.0.0.0", "--port", "8080"]) == 0  # noqa: S104
    assert serve_env["host"] == "0.0.0.0"  # noqa: S104
    # The runtime was built before the server started: JWT verification from the trust file.
    assert type(serve_env["runtime"].verifier).__name__ == "JwtVerifier"


async def test_security_headers_on_success_and_errors(
    auth_client: Any, jwks: JwksServer, es_key: SigningKey
) -> None:
    token = sandbox_token(es_key, iss=SANDBOX_LIKE_ISS, aud=SERVICE_URL, jku=jwks.url("/es.json"))
    async with auth_client() as client:
        responses = [
            await client.post("/cds-services/stub", json=hook_body(), headers=bearer(token)),
            await client.post("/cds-services/stub", json=hook_body()),
            await client.get("/no-such-path"),
        ]
    assert [r.status_code for r in responses] == [200, 401, 404]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_oversized_bodies_are_refused_with_413() -> None:
    app = create_app(make_settings(max_body_bytes=2048), registry=stub_registry())
    async with running_client(app) as client:
        declared = await client.post("/cds-services/stub", json=hook_body(pad="x" * 4096))

        async def chunks() -> Any:
            for _ in range(8):
                yield b" " * 1024

        streamed = await client.post(
            "/cds-services/stub", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert declared.json()["issue"][0]["code"] == "too-costly"


def _emit(logger_name: str, message: str, *args: Any, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        logger.error(message, *args, exc_info=exc)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.parametrize(
    ("message", "args"),
    [
        pytest.param("token %s", (JWT_CANARY,), id="bare-jwt"),
        pytest.param("headers %s", ({"authorization": f"Bearer {TOKEN_CANARY}"},), id="header-dict-repr"),
        pytest.param("headers %s", ([(b"authorization", f"Bearer {TOKEN_CANARY}".encode())],), id="asgi-bytes"),
        pytest.param("Authorization: Bearer %s", (TOKEN_CANARY,), id="header-line"),
        pytest.param("auth=%s", (f"Basic {TOKEN_CANARY}",), id="basic"),
        pytest.param("body %s", ({"access_token": TOKEN_CANARY, "scope": "x"},), id="python-repr-single-quotes"),
        pytest.param('body {"access_token": "%s"}', (TOKEN_CANARY,), id="json"),
        pytest.param("GET /Patient?access_token=%s&_id=1", (TOKEN_CANARY,), id="query-string"),
        pytest.param("bad format %s %s", (TOKEN_CANARY,), id="unformattable-args"),
    ],
)
def test_redacting_filter_drops_tokens(message: str, args: tuple[Any, ...]) -> None:
    output = _emit("calcinosis_cds.test", message, *args)
    assert TOKEN_CANARY not in output
    assert JWT_CANARY not in output
    assert output  # the line itself is kept: only the secret goes


def test_redacting_filter_keeps_exception_type_but_not_its_text() -> None:
    try:
        raise ValueError(f"input_value={{'access_token': '{TOKEN_CANARY}'}} jwt {JWT_CANARY}")
    except ValueError as exc:
        output = _emit("calcinosis_cds.test", "call failed for iss %s", "https://ehr.test", exc=exc)
    assert TOKEN_CANARY not in output
    assert JWT_CANARY not in output
    assert "ValueError" in output
    assert "https://ehr.test" in output  # iss, tenant and jti are safe to log (best practices)


def test_configured_logging_redacts_third_party_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    third_party = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        configure_logging(logging.DEBUG)
        # Request URLs carry patient ids: httpx's INFO request lines never reach the operational log.
        logging.getLogger("httpx").info("HTTP Request: GET https://fhir.test/Observation?patient=p-secret-42")
        logging.getLogger("httpx").warning("HTTP Request failed: Authorization: Bearer %s", TOKEN_CANARY)
        logging.getLogger("uvicorn.error").error("crash", exc_info=RuntimeError(JWT_CANARY))
    finally:
        root.handlers, _ = saved[0], root.setLevel(saved[1])
        for name, level in third_party.items():
            logging.getLogger(name).setLevel(level)
    err = capsys.readouterr().err
    assert "HTTP Request failed" in err
    assert "p-secret-42" not in err
    assert TOKEN_CANARY not in err
    assert JWT_CANARY not in err
