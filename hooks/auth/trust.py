"""The trust file: which CDS clients (JWT issuers) this service believes, and how to check their tokens.

CDS Hooks 2.0 #trusting-cds-clients: "CDS Services SHOULD limit the CDS Clients they trust by maintaining an
allowlist of ``iss`` and ``jku`` urls"; #jwt-signing-algorithm forbids ``none`` and every symmetric algorithm.
The per-issuer record follows the security brief §1.4. ``docs/security.md`` documents the format.

A file that could weaken verification is refused at load time rather than tolerated at run time: HMAC or
``none`` algorithms, ``jku`` URLs that are not https, and (in production) the public test issuers whose
private keys are published, unless ``allow_test_issuers: true`` says so explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from hooks.settings import is_loopback_host

__all__ = [
    "DEFAULT_ALGORITHMS",
    "KNOWN_TEST_ISSUERS",
    "KNOWN_TEST_KEY_X",
    "KNOWN_TEST_KIDS",
    "SUPPORTED_ALGORITHMS",
    "IssuerTrust",
    "TrustConfig",
    "TrustConfigError",
    "check_fetch_url",
    "load_trust_file",
    "parse_trust",
]

DEFAULT_ALGORITHMS = ("ES384", "RS384")
# Asymmetric algorithms PyJWT verifies; the spec recommends ES384/RS384 and forbids none and HMAC.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
DEFAULT_MAX_LIFETIME_S = 900
# The best-practices page expects lifetimes of "no more than an hour"; longer would also bloat the jti cache.
MAX_LIFETIME_CEILING_S = 3600

# Issuers and key ids whose private keys are public: anyone can mint tokens that verify against them.
KNOWN_TEST_ISSUERS = frozenset({"https://sandbox.cds-hooks.org"})
KNOWN_TEST_KIDS = frozenset({"44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", "example-kid"})
# Their public x coordinates too, so renaming the kid does not hide a published key.
KNOWN_TEST_KEY_X = frozenset({
    "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",  # cds-hooks sandbox
    "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",  # CDS Hooks 2.0 spec example
})

_ISSUER_KEYS = frozenset({"iss", "jku", "jwks", "algorithms", "tenants", "fhir_servers", "max_lifetime_s", "sub"})


class TrustConfigError(ValueError):
    """The trust file is missing, unreadable or would weaken verification; the service must not start."""


@dataclass(frozen=True, slots=True)
class IssuerTrust:
    iss: str
    jku: tuple[str, ...] = ()
    # Static JWK Set ("communicated out-of-band", spec #trusting-cds-clients), used when a token has no jku.
    jwks: Mapping[str, Any] | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    tenants: frozenset[str] | None = None
    fhir_servers: tuple[str, ...] = ()
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S
    # Optional expected ``sub`` (Epic sends the client id there); None accepts any or none.
    sub: str | None = None

    @property
    def is_test_issuer(self) -> bool:
        keys = [key for key in (self.jwks or {}).get("keys", ()) if isinstance(key, Mapping)]
        return (
            self.iss in KNOWN_TEST_ISSUERS
            or any(key.get("kid") in KNOWN_TEST_KIDS or key.get("x") in KNOWN_TEST_KEY_X for key in keys)
            or any(urlsplit(url).hostname == "sandbox.cds-hooks.org" for url in self.jku)
        )


@dataclass(frozen=True, slots=True)
class TrustConfig:
    issuers: Mapping[str, IssuerTrust]
    allow_test_issuers: bool = False

    def issuer(self, iss: str) -> IssuerTrust | None:
        return self.issuers.get(iss)


def check_fetch_url(url: str, *, allow_loopback_http: bool) -> None:
    """https only; plain http only to a loopback host, and only when the environment allows it."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_loopback_http and parts.hostname and is_loopback_host(parts.hostname):
        return
    raise TrustConfigError(f"JWKS URL {url!r} must be https (http only to 127.0.0.1/localhost in development/test)")


def load_trust_file(path: Path, *, environment: str) -> TrustConfig:
    """Read a YAML or JSON trust file (JSON is valid YAML, but a .json file is parsed strictly as JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrustConfigError(f"cannot read the trust file {str(path)!r}: {exc.strerror}") from None
    try:
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TrustConfigError(f"the trust file {str(path)!r} is not valid YAML/JSON: {type(exc).__name__}") from None
    return parse_trust(document, environment=environment)


def parse_trust(document: object, *, environment: str) -> TrustConfig:
    if not isinstance(document, Mapping) or not isinstance(document.get("issuers"), list):
        raise TrustConfigError("the trust file must be a mapping with an 'issuers' list")
    allow_test = document.get("allow_test_issuers", False)
    if not isinstance(allow_test, bool):
        raise TrustConfigError("allow_test_issuers must be true or false")
    loopback_ok = environment in {"development", "test"}
    issuers: dict[str, IssuerTrust] = {}
    for index, entry in enumerate(document["issuers"]):
        issuer = _parse_issuer(entry, index, allow_loopback_http=loopback_ok)
        if issuer.iss in issuers:
            raise TrustConfigError(f"issuer {issuer.iss!r} is listed twice")
        if issuer.is_test_issuer and environment == "production" and not allow_test:
            raise TrustConfigError(
                f"issuer {issuer.iss!r} signs with a publicly known private key (test only); production refuses "
                "it unless the trust file says 'allow_test_issuers: true'"
            )
        issuers[issuer.iss] = issuer
    return TrustConfig(issuers=issuers, allow_test_issuers=allow_test)


def _string_list(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise TrustConfigError(f"{where}: '{key}' must be a list of non-empty strings")
    return tuple(value)


def _parse_issuer(entry: object, index: int, *, allow_loopback_http: bool) -> IssuerTrust:
    where = f"issuers[{index}]"
    if not isinstance(entry, Mapping):
        raise TrustConfigError(f"{where} must be a mapping")
    unknown = set(entry) - _ISSUER_KEYS
    if unknown:
        # A typo such as 'tenant:' for 'tenants:' would silently widen trust, so unknown keys are errors.
        raise TrustConfigError(f"{where}: unknown keys {sorted(unknown)}")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss:
        raise TrustConfigError(f"{where}: 'iss' is required")
    where = f"issuer {iss!r}"
    jku = _string_list(entry, "jku", where)
    for url in jku:
        check_fetch_url(url, allow_loopback_http=allow_loopback_http)
    algorithms = _string_list(entry, "algorithms", where) if "algorithms" in entry else DEFAULT_ALGORITHMS
    refused = [alg for alg in algorithms if alg not in SUPPORTED_ALGORITHMS]
    if refused or not algorithms:
        raise TrustConfigError(
            f"{where}: algorithms {refused or '[]'} refused; allowed are {sorted(SUPPORTED_ALGORITHMS)} "
            "(never none or HMAC, CDS Hooks #jwt-signing-algorithm)"
        )
    jwks = entry.get("jwks")
    if jwks is not None and not (isinstance(jwks, Mapping) and isinstance(jwks.get("keys"), list)):
        raise TrustConfigError(f"{where}: 'jwks' must be a JWK Set ({{keys: [...]}})")
    if not jku and jwks is None:
        raise TrustConfigError(f"{where}: give 'jku' (allowed JWKS URLs) or a static 'jwks'")
    tenants = _string_list(entry, "tenants", where) if "tenants" in entry else None
    lifetime = entry.get("max_lifetime_s", DEFAULT_MAX_LIFETIME_S)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 0 < lifetime <= MAX_LIFETIME_CEILING_S:
        raise TrustConfigError(f"{where}: max_lifetime_s must be an integer in 1..{MAX_LIFETIME_CEILING_S}")
    sub = entry.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TrustConfigError(f"{where}: 'sub' must be a string")
    return IssuerTrust(
        iss=iss,
        jku=jku,
        jwks=jwks,
        algorithms=tuple(algorithms),
        tenants=frozenset(tenants) if tenants is not None else None,
        fhir_servers=_string_list(entry, "fhir_servers", where),
        max_lifetime_s=lifetime,
        sub=sub,
    )
