"""A test CDS client: mints CDS Hooks 2.0 JWTs the way real clients sign them, and serves its JWK Set.

CDS Hooks 2.0 #trusting-cds-clients; security brief §1.8 ("How real clients sign"):

* sandbox style (``sandbox_token``): ES384, header ``typ``/``kid``/``jku``; claims ``iss``, ``aud`` = the
  exact endpoint URL, ``exp`` = now+300, ``iat``, ``jti`` = uuid4; no ``tenant``, no ``sub``.
* Epic style (``epic_token``): RS384 with ``jku``; adds ``sub`` (the client id) and ``nbf`` = iat-300;
  ``exp`` - ``iat`` = 900.

Usage (other test modules may reuse this)::

    with JwksServer() as server:
        key = SigningKey.es384()
        server.publish(key)                       # served at server.url() on 127.0.0.1
        token = sandbox_token(key, iss="https://ehr.test", aud="https://testserver/cds-services/x",
                              jku=server.url())
        headers = {"Authorization": f"Bearer {token}"}

Pass ``claim=None`` to any minting helper to drop a claim, or a value to replace it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import FIXED_NOW

__all__ = [
    "TOKEN_NOW",
    "JwksServer",
    "SigningKey",
    "bearer",
    "epic_token",
    "hmac_token",
    "sandbox_token",
    "sign",
    "unsigned_token",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# Tokens are issued at the tests' fixed clock (the app under test is given the same one); a test against a
# real service process passes ``now=int(time.time())``, the clock that process reads.
TOKEN_NOW = int(FIXED_NOW.timestamp())


@dataclass(frozen=True)
class SigningKey:
    """A client signing key with its ``kid`` and algorithm."""

    alg: str
    kid: str
    private_key: PrivateKey

    @classmethod
    def es384(cls, kid: str | None = None) -> SigningKey:
        return cls("ES384", kid or f"es384-{uuid.uuid4()}", ec.generate_private_key(ec.SECP384R1()))

    @classmethod
    def rs384(cls, kid: str | None = None) -> SigningKey:
        return cls("RS384", kid or f"rs384-{uuid.uuid4()}", rsa.generate_private_key(65537, 2048))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> SigningKey:
        private = ECAlgorithm.from_jwk(jwk) if jwk["kty"] == "EC" else RSAAlgorithm.from_jwk(jwk)
        assert isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        return cls(jwk["alg"], jwk["kid"], private)

    def with_kid(self, kid: str) -> SigningKey:
        return SigningKey(self.alg, kid, self.private_key)

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        jwk = (
            ECAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, ec.EllipticCurvePublicKey)
            else RSAAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _apply(claims: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides replace values; None (in either dict) drops the member."""
    return {name: value for name, value in {**claims, **overrides}.items() if value is not None}


def sign(key: SigningKey, claims: dict[str, Any], *, jku: str | None = None, **header: Any) -> str:
    """Sign ``claims`` with ``key``. Header defaults: alg from the key, typ JWT, kid; ``name=None`` drops one."""
    headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid}
    if jku is not None:
        headers["jku"] = jku
    headers = _apply(headers, header)
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)


def sandbox_token(
    key: SigningKey,
    *,
    iss: str | None,
    aud: str | list[str] | None,
    jku: str | None,
    now: int = TOKEN_NOW,
    **claims: Any,
) -> str:
    """A token shaped like the cds-hooks sandbox's (jwt-generator.js), issued at ``now`` (epoch seconds)."""
    payload = {"iss": iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return sign(key, _apply(payload, claims), jku=jku)


def epic_token(
    key: SigningKey,
    *,
    iss: str | None,
    aud: str | list[str] | None,
    jku: str | None,
    sub: str = "epic-client-id",
    now: int = TOKEN_NOW,
    **claims: Any,
) -> str:
    """A token shaped like Epic's example: RS384, sub = client id, nbf = iat-300, 900 s lifetime."""
    payload = {
        "iss": iss, "aud": aud, "exp": now + 900, "iat": now, "nbf": now - 300, "jti": str(uuid.uuid4()), "sub": sub,
    }
    return sign(key, _apply(payload, claims), jku=jku)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def unsigned_token(claims: dict[str, Any], *, kid: str, jku: str | None = None) -> str:
    """``alg: none`` with an empty signature (spec: SHALL NOT be accepted)."""
    header = {"alg": "none", "typ": "JWT", "kid": kid, **({"jku": jku} if jku else {})}
    return _segments(header, claims) + "."


def hmac_token(claims: dict[str, Any], secret: bytes, *, alg: str, kid: str, jku: str | None = None) -> str:
    """HS256/HS384 with ``secret`` (e.g. the public key's PEM): the classic alg-confusion forgery.

    Built by hand because PyJWT rightly refuses to HMAC-sign with an asymmetric key.
    """
    header = {"alg": alg, "typ": "JWT", "kid": kid, **({"jku": jku} if jku else {})}
    signing_input = _segments(header, claims)
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha384
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), digest).digest())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the service's JWKS deadline) breaks the pipe; that is the point of the test.
        return None


@dataclass
class _Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class JwksServer:
    """A real HTTP server on 127.0.0.1 (a free port, one thread) serving JWK Sets; records every request.

    ``publish`` replaces the set at a path (key rotation = publish the new key); ``set_route`` serves any
    bytes/status/headers (oversized bodies, redirects, errors); ``delay_s`` stalls every answer.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self.requests: list[str] = []
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.delay_s:
                    time.sleep(server.delay_s)
                route = server._routes.get(self.path, _Route(b'{"error":"not found"}', 404))
                self.send_response(route.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(route.body)))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def publish(self, *keys: SigningKey, path: str = "/jwks.json") -> None:
        self.set_route(path, json.dumps({"keys": [key.public_jwk() for key in keys]}).encode())

    def set_route(self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._routes[path] = _Route(body, status, headers or {})

    def hits(self, path: str = "/jwks.json") -> int:
        return self.requests.count(path)

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.publish(*keys)
        yield server
