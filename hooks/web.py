"""HTTP plumbing shared by every endpoint: body limits, security headers, JSON in and out, locale.

Request bodies are read by hand so that 415, 413 and 400 are answered before anything is parsed, and every
refusal is an OperationOutcome that never echoes the request (requests carry tokens and PHI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hooks.errors import (
    BadRequest,
    CdsError,
    ClientDisconnected,
    PayloadTooLarge,
    UnsupportedMediaType,
    operation_outcome,
)
from hooks.json_members import NESTING_LIMIT, NestedTooDeeply, repeats_a_member_name
from hooks.offload import run_off_loop
from hooks.settings import Settings

__all__ = [
    "SECURITY_HEADERS",
    "BodyLimitMiddleware",
    "SecurityHeadersMiddleware",
    "describe_validation",
    "endpoint_url",
    "error_response",
    "internal_error_response",
    "json_response",
    "limited_receive",
    "preferred_locale",
    "read_json_body",
    "with_security_headers",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

_JSON_MEDIA = ("application/json", "application/fhir+json")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


# Bodies above this are parsed and validated on a worker thread: the event loop keeps serving meanwhile.
_INLINE_PARSE_BYTES = 256 * 1024


class _BodyTooLarge(Exception):
    pass


def _parse_json(raw: bytes) -> Any:
    """orjson for validity (UTF-8, no NaN/Infinity, no lone surrogates), then no repeated member name."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON (UTF-8, no NaN/Infinity)") from None
    try:
        repeated = repeats_a_member_name(raw, document)
    except NestedTooDeeply:
        raise BadRequest(f"the request body nests arrays and objects more than {NESTING_LIMIT} deep") from None
    if repeated:
        # The name is not echoed (it is request content).
        raise BadRequest("the request body has an object with a duplicate member name")
    return document


def _parse_model(raw: bytes, model: type[ModelT]) -> ModelT:
    document = _parse_json(raw)
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(describe_validation(exc)) from None


def limited_receive(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` that raises once the body streamed so far is over ``max_bytes`` (read_json_body maps it to
    413): a body that lies about, or omits, its Content-Length is stopped before anyone buffers it."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _BodyTooLarge
        return message

    return limited


def with_security_headers(send: Send) -> Send:
    """``send`` that adds SECURITY_HEADERS (those the response does not set itself) to the response start."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name for name, _ in headers}
            headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
            message["headers"] = headers
        await send(message)

    return send_with_headers


class BodyLimitMiddleware:
    """Pure ASGI: refuse bodies over the limit (Content-Length or streamed) before anyone buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Content-Length over the limit is refused by read_json_body (so the refusal is audited).
        await self.app(scope, limited_receive(receive, self.max_bytes), send)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, with_security_headers(send))


def internal_error_response(*, security_headers: bool = False) -> Response:
    """The 500 of a bug: an OperationOutcome that says nothing of the request (the class is logged apart).

    ``security_headers`` for a response sent outside SecurityHeadersMiddleware (the app's last-resort handler).
    """
    body = operation_outcome("internal error", code="exception")
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS} if security_headers else None
    return Response(orjson.dumps(body), status_code=500, media_type="application/fhir+json", headers=headers)


def error_response(error: CdsError) -> Response:
    return Response(
        content=orjson.dumps(error.body()),
        status_code=error.status_code,
        media_type="application/fhir+json",
        headers=error.headers(),
    )


def json_response(payload: Mapping[str, Any] | list[Any], status_code: int = 200) -> Response:
    return Response(content=orjson.dumps(payload), status_code=status_code, media_type="application/json")


def describe_validation(exc: ValidationError | RequestValidationError) -> str:
    """Where and why, never the offending input: requests carry tokens and PHI."""
    problems = []
    for error in exc.errors()[:10]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        message = str(error.get("msg", "invalid"))
        problems.append(f"{location}: {message}")
    return "; ".join(problems) or "invalid request body"


async def read_json_body(request: Request, model: type[ModelT]) -> tuple[ModelT, bytes]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _JSON_MEDIA:
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    limit = request.app.state.runtime.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    try:
        raw = await request.body()
    except _BodyTooLarge:
        raise PayloadTooLarge(f"request body over {limit} bytes") from None
    except ClientDisconnect:
        raise ClientDisconnected("the client disconnected before its request body arrived") from None
    if len(raw) <= _INLINE_PARSE_BYTES:
        return _parse_model(raw, model), raw
    runtime = request.app.state.runtime
    parsed = await run_off_loop(
        runtime.workers, runtime.settings.assess_timeout_s, "reading the request", lambda: _parse_model(raw, model)
    )
    return parsed, raw


def preferred_locale(accept_language: str | None, default: str) -> str:
    """First of en/fr the client prefers (RFC 9110 q-values), else the configured default."""
    if not accept_language:
        return default
    best: tuple[float, str] | None = None
    for index, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().lower().split("-", 1)[0]
        if language not in {"en", "fr"}:
            continue
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        candidate = (quality - index * 1e-6, language)
        if quality > 0 and (best is None or candidate > best):
            best = candidate
    return best[1] if best else default


def endpoint_url(settings: Settings, request: Request) -> str:
    # aud is checked against the configured public base URL, never against the Host header.
    return settings.public_base_url + request.url.path
