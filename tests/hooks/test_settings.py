"""Secure defaults of the one settings object (hooks/settings.py) and the production checks."""

from __future__ import annotations

import pytest

from hooks.app import create_app
from hooks.audit import AuditError
from hooks.audit.factory import build_audit_store
from hooks.settings import Settings, SettingsError


def test_production_needs_an_audit_key() -> None:
    with pytest.raises(ValueError, match="CDS_AUDIT_KEY"):
        Settings(environment="production")


def test_development_defaults_to_auth_off_and_a_dev_key() -> None:
    settings = Settings(environment="development")
    assert settings.auth_required is False
    assert settings.audit_key is not None
    assert Settings(environment="production", audit_key="k").auth_required is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"public_base_url": "http://cds.example.org"}, "https"),
        ({"public_base_url": "https://cds.example.org", "fhir_allow_loopback_http": True}, "LOOPBACK"),
    ],
)
def test_production_refuses_unsafe_service_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(Settings(environment="production", audit_key="k", **overrides))  # type: ignore[arg-type]


def test_production_refuses_a_non_durable_audit_store() -> None:
    with pytest.raises(AuditError, match="not durable"):
        build_audit_store(Settings(environment="production", audit_key="k", audit_dsn="memory://"))


def test_refuses_to_serve_unauthenticated_off_loopback() -> None:
    settings = Settings(environment="development")
    settings.check_bind("127.0.0.1")
    with pytest.raises(SettingsError, match="not a loopback"):
        settings.check_bind("0.0.0.0")  # noqa: S104


def test_comma_separated_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_FHIR_ALLOWED_BASES", "https://a.example/fhir, https://b.example/fhir")
    assert Settings(environment="development").fhir_allowed_bases == ["https://a.example/fhir",
                                                                       "https://b.example/fhir"]
