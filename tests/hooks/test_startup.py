"""Refusing to start (hooks/startup.py): every refusal of the settings, the trust file and the audit store is
one line on stderr that names the setting and what to set, exit code 2, no traceback, and the port is never
bound. Secrets in the environment are never echoed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import hooks.logging_setup
from hooks.audit.factory import open_audit_log
from hooks.cli import main
from tests.support.cds_client import SigningKey

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "calcinosis-cds"
SECRET = "audit-key-canary-5f1e"
PREFIX = "calcinosis-cds: refusing to start: "


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., int]:
    """``serve(env, host=...)`` runs ``calcinosis-cds serve`` in-process with exactly ``env`` (plus a data dir
    under tmp_path); reaching the server itself fails the test."""
    import uvicorn

    async def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server started although the configuration should have been refused")

    monkeypatch.setattr(uvicorn.Server, "serve", never)
    monkeypatch.setattr(hooks.logging_setup, "configure_logging", lambda *a, **k: None)

    def run(env: dict[str, str], host: str = "127.0.0.1") -> int:
        for name in [name for name in os.environ if name.startswith("CDS_")]:
            monkeypatch.delenv(name)
        for name, value in {"CDS_DATA_DIR": str(tmp_path / "data"), **env}.items():
            monkeypatch.setenv(name, value)
        return main(["serve", "--host", host, "--port", "8080"])

    return run


def _trust(tmp_path: Path, document: object, name: str = "trust.yaml") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return str(path)


GOOD_ISSUER = {"iss": "https://ehr.test", "jwks": {"keys": [SigningKey.es384("k1").public_jwk()]}}
PRODUCTION = {"CDS_ENVIRONMENT": "production", "CDS_AUDIT_KEY": SECRET,
              "CDS_PUBLIC_BASE_URL": "https://cds.example.org"}


def _cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], str, list[str]]]:
    """name -> (environment, host, what the line must say)."""
    trust = _trust(tmp_path, {"issuers": [GOOD_ISSUER]}, "good.yaml")
    with_trust = {**PRODUCTION, "CDS_TRUST_FILE": trust}
    return {
        "audit-key-missing": ({"CDS_ENVIRONMENT": "production"}, "0.0.0.0", ["CDS_AUDIT_KEY is required", "set it"]),  # noqa: S104
        "http-public-url": ({**with_trust, "CDS_PUBLIC_BASE_URL": "http://127.0.0.1:8080"}, "0.0.0.0",  # noqa: S104
                            ["CDS_PUBLIC_BASE_URL must be the https URL", "CDS_ENVIRONMENT=test"]),
        "loopback-fhir-in-production": ({**with_trust, "CDS_FHIR_ALLOW_LOOPBACK_HTTP": "true"}, "127.0.0.1",
                                        ["CDS_FHIR_ALLOW_LOOPBACK_HTTP=true", "remove it"]),
        "cors-wildcard": ({**with_trust, "CDS_CORS_ORIGINS": "*"}, "127.0.0.1", ["CDS_CORS_ORIGINS='*'", "list"]),
        "out-of-range": ({**with_trust, "CDS_JWT_LEEWAY_S": "500"}, "127.0.0.1",
                         ["CDS_JWT_LEEWAY_S: Input should be less than or equal to 120"]),
        "not-a-number": ({**with_trust, "CDS_AUDIT_TIMEOUT_S": "soon"}, "127.0.0.1", ["CDS_AUDIT_TIMEOUT_S:"]),
        "unknown-environment": ({**with_trust, "CDS_ENVIRONMENT": "staging"}, "127.0.0.1",
                                ["CDS_ENVIRONMENT: Input should be 'development', 'test' or 'production'"]),
        "auth-off-off-loopback": ({"CDS_ENVIRONMENT": "development"}, "0.0.0.0",  # noqa: S104
                                  ["host '0.0.0.0' is not a loopback address", "--host 127.0.0.1"]),
        "no-trust-file": (PRODUCTION, "127.0.0.1", ["CDS_TRUST_FILE is not set", "set it to the trust file"]),
        "trust-file-missing": ({**PRODUCTION, "CDS_TRUST_FILE": str(tmp_path / "absent.yaml")}, "127.0.0.1",
                               ["CDS_TRUST_FILE=", "cannot read the trust file"]),
        "trust-file-not-yaml": ({**PRODUCTION, "CDS_TRUST_FILE": _trust(tmp_path, "issuers: [", "bad.yaml")},
                                "127.0.0.1", ["CDS_TRUST_FILE=", "not valid YAML/JSON"]),
        "trust-file-hmac": ({**PRODUCTION, "CDS_TRUST_FILE": _trust(
            tmp_path, {"issuers": [{**GOOD_ISSUER, "algorithms": ["HS256"]}]}, "hmac.yaml")}, "127.0.0.1",
            ["CDS_TRUST_FILE=", "never none or HMAC"]),
        "trust-file-typo": ({**PRODUCTION, "CDS_TRUST_FILE": _trust(
            tmp_path, {"issuers": [{**GOOD_ISSUER, "tenant": ["t1"]}]}, "typo.yaml")}, "127.0.0.1",
            ["CDS_TRUST_FILE=", "unknown keys ['tenant']"]),
        "sandbox-in-production": ({**PRODUCTION, "CDS_TRUST_FILE": str(ROOT / "deploy/config/trust.sandbox.yaml")},
                                  "127.0.0.1", ["CDS_TRUST_FILE=", "allow_test_issuers: true"]),
        "dsn-scheme": ({**with_trust, "CDS_AUDIT_DSN": f"mysql://user:{SECRET}@db/audit"}, "127.0.0.1",
                       ["CDS_AUDIT_DSN must start with sqlite:///, postgresql:// or memory://"]),
        "memory-store-in-production": ({**with_trust, "CDS_AUDIT_DSN": "memory://"}, "127.0.0.1",
                                       ["CDS_AUDIT_DSN memory:// is not durable"]),
        "audit-queue-too-small": ({**with_trust, "CDS_MAX_CONCURRENT_CALLS": "64"}, "127.0.0.1",
                                  ["CDS_AUDIT_MAX_PENDING must be at least twice", "set CDS_AUDIT_MAX_PENDING to 128"]),
        "postgres-unreachable": ({**with_trust, "CDS_AUDIT_DSN":
                                  f"postgresql://cds:{SECRET}@127.0.0.1:1/none?connect_timeout=2"}, "127.0.0.1",
                                 ["the audit store (CDS_AUDIT_DSN) cannot be used", "OperationalError"]),
    }


CASES = (
    "audit-key-missing", "http-public-url", "loopback-fhir-in-production", "cors-wildcard", "out-of-range",
    "not-a-number", "unknown-environment", "auth-off-off-loopback", "no-trust-file", "trust-file-missing",
    "trust-file-not-yaml", "trust-file-hmac", "trust-file-typo", "sandbox-in-production", "dsn-scheme",
    "memory-store-in-production", "audit-queue-too-small", "postgres-unreachable",
)


def test_the_case_list_is_complete(tmp_path: Path) -> None:
    assert sorted(_cases(tmp_path)) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_every_refusal_is_one_line_and_exit_code_2(
    case: str, serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env, host, expected = _cases(tmp_path)[case]
    assert serve(env, host=host) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(PREFIX)
    for fragment in expected:
        assert fragment in lines[0]
    assert "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out
    assert captured.out == ""
    # Refused before anything was written: no audit database was created.
    assert not (tmp_path / "data" / "audit.sqlite3").exists()


def test_a_store_keyed_with_another_key_is_refused(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "data" / "audit.sqlite3"
    other = open_audit_log(f"sqlite:///{database}", b"another key")
    other.open()
    other.append_access("show", {})
    other.close()
    trust = _trust(tmp_path, {"issuers": [GOOD_ISSUER]})
    assert serve({**PRODUCTION, "CDS_TRUST_FILE": trust}) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(PREFIX + "audit chain refused: the HMAC of the head (seq 1) does not verify: "
                                    "CDS_AUDIT_KEY is not the key that wrote this chain")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        pytest.param({"CDS_ENVIRONMENT": "production", "CDS_AUDIT_KEY": SECRET,
                      "CDS_PUBLIC_BASE_URL": "http://127.0.0.1:8080"}, "CDS_PUBLIC_BASE_URL", id="settings"),
        pytest.param({"CDS_ENVIRONMENT": "test", "CDS_AUDIT_KEY": SECRET}, "CDS_TRUST_FILE", id="trust"),
    ],
)
def test_the_real_process_exits_2_with_one_line(env: dict[str, str], fragment: str, tmp_path: Path) -> None:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("CDS_")}
    result = subprocess.run(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", "9"],
        env={**clean, **env, "CDS_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(PREFIX)
    assert fragment in line
    assert result.stdout == ""


def test_the_readme_shows_a_real_refusal(serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = next(line for line in readme.splitlines() if line.startswith(PREFIX))
    env, host, _ = _cases(tmp_path)["http-public-url"]
    assert serve(env, host=host) == 2
    assert capsys.readouterr().err.strip() == documented
