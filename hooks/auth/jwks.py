"""JWK Sets of trusted CDS clients: parsing, key/algorithm matching, and a cached async fetcher.

CDS Hooks 2.0 #trusting-cds-clients: the client publishes its public key as a JWK in a JWK Set, optionally
at the URL in the JWT header ``jku``; services "should maintain their own rotating cache of public keys"
(best practices). Fetch rules from the security brief §1.4/§2.3: allow-listed URL only (the verifier checks
that), https only, no redirects, 2 s deadline, 64 KiB cap, TTL cache, one forced refresh on an unknown
``kid`` with a cooldown so a stream of made-up kids cannot turn into a stream of fetches.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from hooks.auth.trust import TrustConfigError, check_fetch_url

__all__ = ["JwksCache", "JwksUnavailable", "PublicKey", "key_fits_algorithm", "parse_jwks"]

log = logging.getLogger("calcinosis_cds.auth")

_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# Keep serving the last good key set this long past its TTL while the client's JWKS endpoint is failing:
# an EHR's JWKS hiccup should not turn every call into a 401, but revoked keys must not live for days.
_STALE_IF_ERROR_S = 3600.0


class JwksUnavailable(Exception):
    """The JWK Set could not be fetched or parsed and no usable cached copy exists."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    jwk: PyJWK
    # The JWK's own "alg"/"use" members as published (PyJWK derives an alg when absent, which is not a promise).
    declared_alg: str | None
    use: str | None


def parse_jwks(document: object) -> dict[str, PublicKey]:
    """Public signing keys by ``kid``. Keys without a kid, with private material or unparsable are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("not a JWK Set")
    keys: dict[str, PublicKey] = {}
    for raw in document["keys"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("kid"), str) or "d" in raw:
            continue
        try:
            jwk = PyJWK(dict(raw))
        except (PyJWTError, ValueError, TypeError, KeyError):
            # One unusable key (unknown kty or crv, an encryption key, bad fields) must not cost the others.
            continue
        alg, use = raw.get("alg"), raw.get("use")
        keys[raw["kid"]] = PublicKey(jwk, alg if isinstance(alg, str) else None, use if isinstance(use, str) else None)
    return keys


def key_fits_algorithm(public: PublicKey, alg: str) -> bool:
    """The key may verify ``alg``: EC on the alg's curve for ES*, RSA ≥ 2048 bits for RS*/PS*.

    The key object's type decides, not the JWK's ``alg`` member alone, so an RSA key can never be
    used for an EC algorithm (or a public key as an HMAC secret: HMAC is never in an allow-list).
    """
    if public.declared_alg not in {None, alg} or public.use not in {None, "sig"}:
        return False
    key = public.jwk.key
    if alg in _CURVES:
        return isinstance(key, EllipticCurvePublicKey) and key.curve.name == _CURVES[alg]
    if alg[:2] in {"RS", "PS"}:
        return isinstance(key, RSAPublicKey) and key.key_size >= 2048
    return False


@dataclass(slots=True)
class _Entry:
    keys: dict[str, PublicKey]
    fetched_at: float


class JwksCache:
    """Fetches and caches JWK Sets by URL. The caller must only pass allow-listed URLs."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        ttl_s: float = 300.0,
        cooldown_s: float = 30.0,
        timeout_s: float = 2.0,
        max_bytes: int = 64 * 1024,
        allow_loopback_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._allow_loopback_http = allow_loopback_http
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._forced: dict[str, float] = {}
        self._failed: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key(self, url: str, kid: str) -> PublicKey | None:
        """The key for ``kid`` at ``url``; None when the set (after at most one refresh) lacks it."""
        entry = self._entries.get(url)
        if entry is not None and kid in entry.keys and self._clock() - entry.fetched_at < self._ttl_s:
            return entry.keys[kid]
        async with self._locks.setdefault(url, asyncio.Lock()):
            # Another task may have refreshed while this one waited for the lock.
            now = self._clock()
            entry = self._entries.get(url)
            fresh = entry is not None and now - entry.fetched_at < self._ttl_s
            if entry is not None and fresh:
                if kid in entry.keys:
                    return entry.keys[kid]
                # Unknown kid in a fresh set: maybe a key rotation. One forced refresh per cooldown, so
                # tokens with made-up kids cannot make us hammer the client's JWKS endpoint.
                if now - self._forced.get(url, -math.inf) < self._cooldown_s:
                    return None
                self._forced[url] = now
            elif now - self._failed.get(url, -math.inf) < self._cooldown_s:
                return self._stale(entry, now, kid)
            try:
                keys = await self._fetch(url)
            except JwksUnavailable as exc:
                self._failed[url] = now
                log.warning("JWKS fetch failed for %s (%s)", url, exc)
                return self._stale(entry, now, kid)
            self._entries[url] = _Entry(keys, self._clock())
            return keys.get(kid)

    def _stale(self, entry: _Entry | None, now: float, kid: str) -> PublicKey | None:
        if entry is None or now - entry.fetched_at >= self._ttl_s + _STALE_IF_ERROR_S:
            raise JwksUnavailable("no usable JWK Set")
        return entry.keys.get(kid)

    async def _fetch(self, url: str) -> dict[str, PublicKey]:
        try:
            check_fetch_url(url, allow_loopback_http=self._allow_loopback_http)
        except TrustConfigError:
            raise JwksUnavailable("URL refused") from None
        body = bytearray()
        try:
            # httpx timeouts are per phase; asyncio.timeout bounds the whole exchange (a trickling server).
            async with asyncio.timeout(self._timeout_s), self._client.stream(
                "GET", url, headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                follow_redirects=False, timeout=self._timeout_s,
            ) as response:
                if response.status_code != 200:
                    raise JwksUnavailable(f"HTTP {response.status_code}")
                # A compressed body would be inflated before the size cap counts it.
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise JwksUnavailable("compressed response")
                declared = response.headers.get("content-length", "")
                if declared.isascii() and declared.isdecimal() and int(declared) > self._max_bytes:
                    raise JwksUnavailable("over the size cap")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise JwksUnavailable("over the size cap")
        except (httpx.HTTPError, TimeoutError) as exc:
            raise JwksUnavailable(type(exc).__name__) from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise JwksUnavailable("not JSON") from None
        return parse_jwks(document)
