"""Verifies the CDS client's JWT on every call (CDS Hooks 2.0 #trusting-cds-clients, #jwt-signing-algorithm).

Checks run in the order of the CDS Hooks best-practices page (security brief §1.4): ``iss`` allow-listed,
``aud`` equals the endpoint invoked, ``exp``/``iat`` within the leeway and the issuer's maximum lifetime,
``tenant`` allow-listed, header ``typ``/``kid``, signature with the key for ``kid`` under an algorithm from
the issuer's allow-list (never from the header alone), then the per-issuer rate limit, and last the ``jti``
replay check, so that forged or rejected tokens never fill the replay store.

Every failure is ``Unauthorized(reason)``: the client sees one generic 401, the reason class goes to the
audit record only. Nothing here logs a token; unverified claim values are not logged either.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
from jwt.exceptions import InvalidSignatureError, PyJWTError
from starlette.requests import Request

from hooks.audit.store import AuditError
from hooks.auth import ANONYMOUS, Caller
from hooks.auth.jwks import JwksCache, JwksUnavailable, PublicKey, key_fits_algorithm, parse_jwks
from hooks.auth.rate_limit import TokenBucketLimiter
from hooks.auth.trust import IssuerTrust, TrustConfig, TrustConfigError, load_trust_file
from hooks.errors import CdsError, ServiceUnavailable, TooManyRequests, Unauthorized
from hooks.settings import Settings

__all__ = ["JtiStore", "JwtVerifier", "build_verifier", "load_trust"]

log = logging.getLogger("calcinosis_cds.auth")

_REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
# Real CDS JWTs are well under 2 KiB; the cap keeps base64/JSON decoding of hostile headers cheap.
_MAX_TOKEN_CHARS = 8192
_MAX_JTI_CHARS = 256


class JtiStore(Protocol):
    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool: ...


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthorized("missing-claim" if value is None else "invalid-claim")
    return float(value)


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
        raise Unauthorized("malformed-token")
    return token


class JwtVerifier:
    """``CallerVerifier`` for CDS clients listed in a trust file."""

    def __init__(
        self,
        trust: TrustConfig,
        *,
        jti_store: JtiStore,
        jwks: JwksCache,
        leeway_s: float = 60.0,
        limiter: TokenBucketLimiter | None = None,
        clock: Callable[[], float] = time.time,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self._trust = trust
        self._jti_store = jti_store
        self._jwks = jwks
        self._leeway_s = leeway_s
        self._limiter = limiter
        self._clock = clock
        # Told the reason class of every rejection (the metrics' JWT rejection counter); never the token.
        self._on_reject = on_reject
        self._static_keys = {iss: parse_jwks(i.jwks) for iss, i in trust.issuers.items() if i.jwks is not None}

    async def verify(self, request: Request, endpoint_url: str, *, required: bool) -> Caller:
        try:
            token = _bearer_token(request)
            if token is None:
                if required:
                    raise Unauthorized("missing-token")
                client = request.client.host if request.client else "unknown"
                self._rate_limit(f"anonymous:{client}")
                return ANONYMOUS
            return await self._verify_token(token, endpoint_url)
        except Unauthorized as exc:
            # The reason class only: paths and claim values are caller-controlled and may carry anything.
            log.info("caller rejected: %s", exc.failure)
            if self._on_reject is not None:
                self._on_reject(exc.failure or exc.reason_class)
            raise

    async def _verify_token(self, token: str, endpoint_url: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise Unauthorized("malformed-token") from None
        if not isinstance(claims, dict):
            raise Unauthorized("malformed-token")
        now = self._clock()

        # 1. iss on the allow-list.
        iss = claims.get("iss")
        if iss is None:
            raise Unauthorized("missing-claim")
        issuer = self._trust.issuer(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized("unknown-issuer")
        # 2. aud is the URL of the endpoint invoked (string or array).
        aud = claims.get("aud")
        if aud is None:
            raise Unauthorized("missing-claim")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if endpoint_url not in audiences:
            raise Unauthorized("wrong-audience")
        # 3. Time: exp, iat (not in the future), nbf if sent (Epic), lifetime cap.
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if now > exp + self._leeway_s:
            raise Unauthorized("expired")
        if iat > now + self._leeway_s:
            raise Unauthorized("issued-in-future")
        if "nbf" in claims and _number(claims, "nbf") > now + self._leeway_s:
            raise Unauthorized("not-yet-valid")
        if not 0 <= exp - iat <= issuer.max_lifetime_s:
            raise Unauthorized("lifetime-too-long")
        jti = claims.get("jti")
        if jti is None:
            raise Unauthorized("missing-claim")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI_CHARS:
            raise Unauthorized("invalid-claim")
        # 4. tenant, when the issuer lists tenants.
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise Unauthorized("invalid-claim")
        if issuer.tenants is not None and tenant not in issuer.tenants:
            raise Unauthorized("tenant-not-allowed")
        sub = claims.get("sub")
        if issuer.sub is not None and sub != issuer.sub:
            raise Unauthorized("wrong-subject")
        # 5. Header and signature.
        alg, kid = header.get("alg"), header.get("kid")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.upper() != "JWT" or not isinstance(kid, str) or not kid:
            raise Unauthorized("bad-header")
        if alg not in issuer.algorithms:
            raise Unauthorized("algorithm-not-allowed")
        public = await self._key_for(issuer, header.get("jku"), kid)
        if not key_fits_algorithm(public, alg):
            raise Unauthorized("key-type-mismatch")
        try:
            jwt.decode(
                token,
                key=public.jwk.key,
                algorithms=[alg],
                audience=endpoint_url,
                issuer=issuer.iss,
                # Times were checked above against self._clock; PyJWT would use the wall clock.
                options={"require": list(_REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            )
        except InvalidSignatureError:
            raise Unauthorized("bad-signature") from None
        except PyJWTError:
            raise Unauthorized("invalid-claim") from None
        try:
            # 6. Rate limit per verified issuer and tenant, before the jti is spent.
            self._rate_limit(f"iss:{issuer.iss}|{tenant or ''}")
            # 7. jti unseen; kept until the token could no longer be accepted.
            expires_at = datetime.fromtimestamp(exp + self._leeway_s, tz=UTC)
            try:
                fresh = await self._jti_store.remember_jti(issuer.iss, jti, expires_at)
            except AuditError:
                # Replay cannot be checked: fail closed, but it is the service's fault, not the caller's.
                raise ServiceUnavailable("the replay cache is unavailable; retry") from None
            if not fresh:
                raise Unauthorized("replayed-jti")
        except CdsError as exc:
            # The signature verified: this refusal is attributable to the issuer (brief §3.3, 401s with iss/kid).
            exc.caller_iss, exc.caller_kid = issuer.iss, kid
            raise
        return Caller(
            authenticated=True,
            iss=issuer.iss,
            tenant=tenant,
            jti=jti,
            kid=kid,
            alg=alg,
            sub=sub if isinstance(sub, str) else None,
            fhir_servers=issuer.fhir_servers,
        )

    async def _key_for(self, issuer: IssuerTrust, jku: object, kid: str) -> PublicKey:
        static = self._static_keys.get(issuer.iss)
        if jku is None:
            if static is not None:
                return _pinned(static, kid)
            if len(issuer.jku) != 1:
                raise Unauthorized("jku-not-allowed")
            # No jku in the token: the single configured JWKS URL is the out-of-band key location.
            jku = issuer.jku[0]
        if not isinstance(jku, str) or jku not in issuer.jku:
            raise Unauthorized("jku-not-allowed")
        if static is not None:
            # Pinned: an issuer with both jku and jwks answers tokens whose jku is on its list from the static
            # set, and the URL is never fetched (offline set-ups, an EHR's keys fixed in production).
            return _pinned(static, kid)
        try:
            fetched = await self._jwks.key(jku, kid)
        except JwksUnavailable:
            raise Unauthorized("jwks-unavailable") from None
        except Exception:  # whatever a client's key set holds, it is a 401, never a 500
            log.warning("unexpected error reading the JWK Set of %s", issuer.iss)
            raise Unauthorized("jwks-unavailable") from None
        if fetched is None:
            raise Unauthorized("unknown-kid")
        return fetched

    def _rate_limit(self, key: str) -> None:
        if self._limiter is not None and (retry_after := self._limiter.acquire(key)) is not None:
            raise TooManyRequests(retry_after)


def _pinned(keys: Mapping[str, PublicKey], kid: str) -> PublicKey:
    key = keys.get(kid)
    if key is None:
        raise Unauthorized("unknown-kid")
    return key


def load_trust(settings: Settings) -> TrustConfig:
    """The trust file ``CDS_TRUST_FILE`` names, read before anything else is opened.

    Raises ``TrustConfigError`` (one of ``hooks.startup.REFUSALS``) naming ``CDS_TRUST_FILE`` when there is no
    usable trust file.
    """
    if settings.trust_file is None:
        raise TrustConfigError(
            "authentication is required (CDS_AUTH_REQUIRED, the default outside development) but CDS_TRUST_FILE "
            "is not set: set it to the trust file that lists the CDS clients (docs/security.md), or "
            "CDS_ENVIRONMENT=development for local work without authentication"
        )
    try:
        return load_trust_file(settings.trust_file, environment=settings.environment)
    except TrustConfigError as exc:
        raise TrustConfigError(f"CDS_TRUST_FILE={settings.trust_file}: {exc}") from None


def build_verifier(
    settings: Settings,
    trust: TrustConfig,
    jti_store: JtiStore,
    closers: list[Callable[[], Awaitable[None]]],
    *,
    clock: Callable[[], float] = time.time,
    on_reject: Callable[[str], None] | None = None,
) -> JwtVerifier:
    """The verifier ``build_runtime`` installs when authentication is required (``load_trust`` gives ``trust``).

    ``clock`` (epoch seconds) judges ``exp``/``iat``; ``on_reject`` hears the reason class of each rejection.
    """
    if trust.allow_test_issuers and any(i.is_test_issuer for i in trust.issuers.values()):
        log.warning("the trust file allows a TEST issuer whose private key is public: anyone can mint its tokens")
    # Redirects are never followed: a jku that redirects is an SSRF pivot (security brief §1.4).
    client = httpx.AsyncClient(follow_redirects=False, timeout=settings.jwks_timeout_s, trust_env=False)
    closers.append(client.aclose)
    jwks = JwksCache(
        client,
        ttl_s=settings.jwks_cache_ttl_s,
        cooldown_s=settings.jwks_refresh_cooldown_s,
        timeout_s=settings.jwks_timeout_s,
        max_bytes=settings.jwks_max_bytes,
        allow_loopback_http=settings.environment in {"development", "test"},
    )
    return JwtVerifier(
        trust,
        jti_store=jti_store,
        jwks=jwks,
        leeway_s=settings.jwt_leeway_s,
        limiter=TokenBucketLimiter(settings.rate_limit_per_minute),
        clock=clock,
        on_reject=on_reject,
    )
