"""One settings object for the whole service, read from ``CDS_*`` environment variables.

Secure by default: outside ``development`` authentication is on, an audit HMAC key is required,
and the service refuses to start with authentication off on a non-loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "get_settings", "is_loopback_host"]

# The development audit key is public on purpose: development mode is loud about it and refuses non-loopback.
DEVELOPMENT_AUDIT_KEY = "development-only-audit-key-not-secret"
# Domain separation: the assessment-link key is HMAC(secret, label), so it differs from the audit chain key.
_LINK_KEY_LABEL = b"calcinosis-cds/assessment-link/v1"


def is_loopback_host(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SettingsError(ValueError):
    """A setting the service refuses to start with; the message names it and says what to set."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob the service has. README's configuration table documents each ``CDS_`` variable."""

    model_config = SettingsConfigDict(env_prefix="CDS_", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "test", "production"] = "production"
    # Public base URL of this service, e.g. https://cds.example.org: the JWT ``aud`` is checked against it.
    # Never derived from the Host header.
    public_base_url: str = "http://127.0.0.1:8080"
    locale: Literal["en", "fr"] = "en"
    # A 10-year record prefetched in full is several MiB (issue 11); parsing runs off the event loop.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # --- trust (JWT) ---
    auth_required: bool | None = None
    discovery_auth: Literal["required", "optional", "off"] = "optional"
    trust_file: Path | None = None
    jwt_leeway_s: int = Field(default=60, ge=0, le=120)
    rate_limit_per_minute: int = Field(default=600, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []
    # JWKS fetched from an allow-listed jku (security brief §1.4): cache, forced-refresh cooldown and caps.
    jwks_cache_ttl_s: float = Field(default=300.0, gt=0, le=3600)
    jwks_refresh_cooldown_s: float = Field(default=30.0, ge=0, le=3600)
    jwks_timeout_s: float = Field(default=2.0, gt=0, le=10)
    jwks_max_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    # --- operations ---
    # GET /metrics (Prometheus text format) on the service port; keep it off the public ingress (docs/metrics.md).
    metrics_enabled: bool = True

    # --- audit ---
    data_dir: Path = Path("data")
    audit_dsn: str | None = None
    audit_key: SecretStr | None = None
    # Every store call is bounded: past the budget (or a full queue) the response is 503, never a hang.
    audit_timeout_s: float = Field(default=3.0, gt=0, lt=30)
    audit_max_pending: int = Field(default=64, ge=1)
    # Service and feedback calls handled at once; the next one gets a fast, audited 503 (Retry-After: 1).
    # Sized with audit_max_pending (at least twice this): the admitted calls' audit rows and as many refusal
    # rows fit in the audit queue together, so overload is answered at once and recorded, never a timeout.
    max_concurrent_calls: int = Field(default=32, ge=1)
    # Chain head written to a checkpoint table and an off-database file every N appends (0: only at shutdown).
    audit_checkpoint_every: int = Field(default=100, ge=0)

    # --- FHIR fallback when prefetch is incomplete ---
    fhir_allowed_bases: Annotated[list[str], NoDecode] = []
    fhir_allow_loopback_http: bool = False
    fhir_deadline_s: float = Field(default=1.5, gt=0, le=30)
    fhir_request_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # Pages per key (x CDS_FHIR_SEARCH_COUNT results): a 261-Condition chart or years of orders need more than
    # 10; Observations stop earlier once newest first past the look-back (issue 11). The deadline still bounds.
    fhir_page_cap: int = Field(default=30, ge=1, le=100)
    # Added as _count to searches that set none: same results, fewer pages (servers default to ~20). 0 = never.
    fhir_search_count: int = Field(default=100, ge=0, le=1000)
    fhir_max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # FHIR answer bytes one hook call may read over all its keys: caps the memory one call can take.
    fhir_max_call_bytes: int = Field(default=24 * 1024 * 1024, ge=1024)
    # Connections (and requests in flight) per FHIR origin (scheme, host, port); past them a query waits for
    # a slot within its deadline. Each origin has its own pool, so one stalled server cannot starve others.
    fhir_connections_per_origin: int = Field(default=20, ge=1, le=500)
    fhir_breaker_failures: int = Field(default=3, ge=1)
    fhir_breaker_reset_s: float = Field(default=30.0, gt=0)

    # --- work after the fetch (issue 16 item 5) ---
    # Mapping and assessment run on worker threads, never on the event loop; past this budget the call is
    # answered 503 (audited) while the worker finishes on its own. Workers bound the CPU taken at once.
    assess_timeout_s: float = Field(default=2.0, gt=0, le=30)
    assess_workers: int = Field(default=2, ge=1, le=32)

    # --- clinical windows (brief §5b, rule C1) ---
    chemistry_lookback_days: int = Field(default=90, ge=1)
    serology_lookback_days: int = Field(default=365, ge=1)

    # --- assessment page and knowledge browser (issue 12, docs/pages.md) ---
    # Every card links to GET /assessment/{hookInstance}?token=...: a signed token bound to the call, its
    # patient and its caller, valid this long. The page is the full assessment read back from the audit trail.
    assessment_link_ttl_s: int = Field(default=1800, ge=60, le=86400)
    # The key the links are signed with. Unset: derived from CDS_AUDIT_KEY (HMAC under a fixed label), so a
    # link never reveals the audit key and no new secret is needed; set it to rotate links on their own.
    assessment_link_key: SecretStr | None = None
    # GET /knowledge: the knowledge files for the clinicians who maintain them (no PHI; on by default).
    knowledge_page: bool = True

    @field_validator("cors_origins", "fhir_allowed_bases", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secure_defaults(self) -> Settings:
        if self.auth_required is None:
            self.auth_required = self.environment != "development"
        if self.audit_key is None:
            if self.environment != "development":
                raise SettingsError(
                    "CDS_AUDIT_KEY is required outside development (it keys the audit hash chain): set it to a long "
                    "random secret, e.g. from python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            self.audit_key = SecretStr(DEVELOPMENT_AUDIT_KEY)
        if self.audit_dsn is None:
            self.audit_dsn = f"sqlite:///{self.data_dir / 'audit.sqlite3'}"
        if self.audit_max_pending < 2 * self.max_concurrent_calls:
            raise SettingsError(
                "CDS_AUDIT_MAX_PENDING must be at least twice CDS_MAX_CONCURRENT_CALLS: room for the admitted "
                f"calls' audit rows and for as many audited refusals; set CDS_AUDIT_MAX_PENDING to "
                f"{2 * self.max_concurrent_calls} or more, or lower CDS_MAX_CONCURRENT_CALLS"
            )
        return self

    def check_service(self) -> None:
        """Refuse to serve with settings that are unsafe in production (called when the app is built)."""
        if self.environment != "production":
            return
        # CDS Hooks 2.0 requires TLS; the JWT aud is checked against this exact base.
        if not self.public_base_url.startswith("https://"):
            raise SettingsError(
                "CDS_PUBLIC_BASE_URL must be the https URL EHRs call in production (the JWT aud is checked against "
                "it; TLS may end at a reverse proxy in front): set CDS_PUBLIC_BASE_URL=https://..., or "
                "CDS_ENVIRONMENT=test for a local sandbox"
            )
        if self.fhir_allow_loopback_http:
            raise SettingsError(
                "CDS_FHIR_ALLOW_LOOPBACK_HTTP=true is for development and tests only: remove it in production "
                "(FHIR servers are reached over https), or set CDS_ENVIRONMENT=test for a local sandbox"
            )
        if "*" in self.cors_origins:
            # OWASP API8: a wildcard lets any web page drive the service from a clinician's browser.
            raise SettingsError(
                "CDS_CORS_ORIGINS='*' is refused in production: list the browser clients' origins, "
                "e.g. CDS_CORS_ORIGINS=https://sandbox.cds-hooks.org"
            )

    def assessment_link_signing_key(self) -> bytes:
        """32 bytes for HS256, never the configured secret itself (one key per purpose)."""
        secret = self.assessment_link_key or self.audit_key
        if secret is None:  # not reachable: the validator always sets audit_key
            raise ValueError("CDS_AUDIT_KEY is not set")
        return hmac.new(secret.get_secret_value().encode("utf-8"), _LINK_KEY_LABEL, hashlib.sha256).digest()

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    def check_bind(self, host: str) -> None:
        """Refuse to serve PHI without authentication anywhere but loopback."""
        if not self.auth_required and not is_loopback_host(host):
            raise SettingsError(
                f"authentication is off (CDS_AUTH_REQUIRED=false, the default in development) and host {host!r} "
                "is not a loopback address: serve on --host 127.0.0.1, or turn authentication on "
                "(CDS_AUTH_REQUIRED=true with a CDS_TRUST_FILE)"
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
