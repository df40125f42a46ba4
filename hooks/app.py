"""The FastAPI application: discovery, service calls, feedback, health.

CDS Hooks 2.0: ``GET {base}/cds-services`` (#discovery), ``POST {base}/cds-services/{id}``
(#calling-a-cds-service), ``POST {base}/cds-services/{id}/feedback`` (#feedback). Every non-2xx answer
carries an OperationOutcome (3.0 ballot, forward compatible) and never echoes request content.
Every service call, failed ones included, is audited before the response leaves (security brief §3.4).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hooks import __version__
from hooks.audit import AuditError, AuditStore, FeedbackRecord, HookCallRecord, PrefetchKeyState
from hooks.auth import Caller, CallerVerifier
from hooks.data_access import FhirFetcher, ResolvedData, resolve_prefetch
from hooks.errors import (
    BadRequest,
    CdsError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceUnavailable,
    UnsupportedMediaType,
    operation_outcome,
)
from hooks.models import (
    CdsRequest,
    CdsResponse,
    DiscoveryResponse,
    FeedbackItem,
    FeedbackRequest,
    context_model_for,
)
from hooks.registry import HookCall, ServiceRegistry
from hooks.settings import Settings, get_settings

__all__ = ["Runtime", "create_app"]

log = logging.getLogger("calcinosis_cds")

ModelT = TypeVar("ModelT", bound=BaseModel)
Clock = Callable[[], datetime]

_JSON_MEDIA = ("application/json", "application/fhir+json")
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Runtime:
    """Process-wide collaborators, built once in the lifespan and read through ``RuntimeDep``."""

    settings: Settings
    registry: ServiceRegistry
    audit: AuditStore
    verifier: CallerVerifier
    fetcher: FhirFetcher | None
    clock: Clock = _utcnow
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


# --------------------------------------------------------------------------- body handling


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI: refuse bodies over the limit (Content-Length or streamed) before anyone buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Content-Length over the limit is refused by read_json_body (so the refusal is audited); this
        # wrapper stops a streamed body that lies about, or omits, its length.
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def error_response(error: CdsError) -> Response:
    return Response(
        content=orjson.dumps(error.body()),
        status_code=error.status_code,
        media_type="application/fhir+json",
        headers=error.headers(),
    )


def json_response(payload: Mapping[str, Any] | list[Any], status_code: int = 200) -> Response:
    return Response(content=orjson.dumps(payload), status_code=status_code, media_type="application/json")


def _describe_validation(exc: ValidationError | RequestValidationError) -> str:
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
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON (UTF-8, no NaN/Infinity)") from None
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(document), raw
    except ValidationError as exc:
        raise BadRequest(_describe_validation(exc)) from None


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


def _endpoint_url(settings: Settings, request: Request) -> str:
    # aud is checked against the configured public base URL, never against the Host header.
    return settings.public_base_url + request.url.path


# --------------------------------------------------------------------------- app factory


def create_app(
    settings: Settings | None = None,
    *,
    registry: ServiceRegistry | None = None,
    audit_store: AuditStore | None = None,
    verifier: CallerVerifier | None = None,
    fetcher: FhirFetcher | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the service. Collaborators not given are built from settings in the lifespan."""
    settings = settings or get_settings()
    settings.check_service()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hooks.wiring import build_runtime

        runtime = await build_runtime(
            settings,
            registry=registry,
            audit_store=audit_store,
            verifier=verifier,
            fetcher=fetcher,
            clock=clock,
        )
        app.state.runtime = runtime
        try:
            yield
        finally:
            for close in reversed(runtime.closers):
                await close()

    app = FastAPI(
        title="calcinosis-cds",
        version=__version__,
        description="CDS Hooks 2.0 service: calcinosis cutis subtype, work-up, therapy options and red flags.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _install_error_handlers(app)
    _install_routes(app)
    _install_openapi(app)
    from hooks.wiring import install_middleware

    install_middleware(app, settings)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CdsError)
    async def _cds_error(request: Request, exc: CdsError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        # Replaces FastAPI's default 422, which echoes the input (access tokens included).
        return error_response(BadRequest(_describe_validation(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        mapped: CdsError
        if exc.status_code == 404:
            mapped = NotFound("no such endpoint")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed("method not allowed on this endpoint")
        else:
            mapped = BadRequest("the request could not be processed")
        response = error_response(mapped)
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        # A 500 is a bug. Log the class and where, never the request.
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        body = operation_outcome("internal error", code="exception")
        # This handler runs outside SecurityHeadersMiddleware, so it adds the headers itself.
        headers = {name.decode(): value.decode() for name, value in _SECURITY_HEADERS}
        return Response(orjson.dumps(body), status_code=500, media_type="application/fhir+json", headers=headers)


_ERRORS = {
    400: "Malformed JSON or a body that is not a valid CDS Hooks 2.0 request",
    401: "Missing or invalid JWT (no detail given)",
    404: "Unknown service id",
    412: "Data the assessment needs could not be obtained (names the prefetch key)",
    413: "Body over CDS_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    429: "Rate limit for this issuer exceeded (Retry-After)",
    503: "The response could not be audited, so it was not sent",
}


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    outcome_schema = {"type": "object", "properties": {"resourceType": {"const": "OperationOutcome"}}}
    return {
        status: {"description": _ERRORS[status], "content": {"application/fhir+json": {"schema": outcome_schema}}}
        for status in statuses
    }


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _install_openapi(app: FastAPI) -> None:
    """Request bodies are read by hand (415/413/400 before parsing), so their schemas are declared through
    ``openapi_extra``; their nested models must then be added to ``components`` for the refs to resolve."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for path in spec.get("paths", {}).values():
                for operation in path.values():
                    content = operation.get("requestBody", {}).get("content", {})
                    for media in content.values():
                        components.update(media.get("schema", {}).pop("$defs", {}))
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_routes(app: FastAPI) -> None:
    @app.get(
        "/cds-services",
        response_model=DiscoveryResponse,
        response_model_exclude_none=True,
        responses=_documented(401, 429),
        tags=["cds-hooks"],
    )
    async def discovery(request: Request, runtime: RuntimeDep) -> Response:
        """CDS Hooks 2.0 #discovery: the services this endpoint offers, with their prefetch templates."""
        settings = runtime.settings
        if settings.discovery_auth != "off" and settings.auth_required:
            started = time.perf_counter()
            try:
                await runtime.verifier.verify(
                    request, _endpoint_url(settings, request), required=settings.discovery_auth == "required"
                )
            except (CdsError, AuditError) as error:
                # Failed authentication is security-relevant wherever it happens: audit it too.
                refusal = error if isinstance(error, CdsError) else ServiceUnavailable("audit store unavailable")
                record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock())
                record.code_version = __version__
                return await _audited(runtime, record, _failure(record, refusal, prefix="discovery:"), started)
        return json_response(DiscoveryResponse(services=runtime.registry.descriptors()).to_json())

    @app.post(
        "/cds-services/{service_id}",
        response_model=CdsResponse,
        response_model_exclude_none=True,
        responses=_documented(400, 401, 404, 412, 413, 415, 429, 503),
        openapi_extra=_request_body(CdsRequest),
        tags=["cds-hooks"],
    )
    async def call_service(service_id: str, request: Request, runtime: RuntimeDep) -> Response:
        """CDS Hooks 2.0 #calling-a-cds-service: cards for this hook call (``{"cards": []}`` when silent)."""
        return await handle_service_call(service_id, request, runtime)

    @app.post(
        "/cds-services/{service_id}/feedback",
        responses={200: {"description": "Feedback recorded"}, **_documented(400, 401, 404, 413, 415, 429, 503)},
        openapi_extra=_request_body(FeedbackRequest),
        tags=["cds-hooks"],
    )
    async def feedback(service_id: str, request: Request, runtime: RuntimeDep) -> Response:
        """CDS Hooks 2.0 #feedback: accepted/overridden outcomes for cards this service returned."""
        return await handle_feedback(service_id, request, runtime)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"description": "A store is unreachable"}},
    )
    async def readyz(runtime: RuntimeDep) -> Response:
        """The stores the service needs are reachable."""
        try:
            await runtime.audit.ping()
        except AuditError:
            return error_response(ServiceUnavailable("audit store unreachable"))
        return json_response({"status": "ready"})


# --------------------------------------------------------------------------- service call pipeline


async def handle_service_call(service_id: str, request: Request, runtime: RuntimeDep) -> Response:
    settings = runtime.settings
    started = time.perf_counter()
    record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock(), service_id=service_id)
    record.code_version = __version__
    response: Response
    try:
        caller = await runtime.verifier.verify(
            request, _endpoint_url(settings, request), required=bool(settings.auth_required)
        )
        _record_caller(record, caller)
        if not runtime.registry.exists(service_id):
            raise NotFound("no CDS service with this id")
        cds_request, raw = await read_json_body(request, CdsRequest)
        record.hook = cds_request.hook
        record.hook_instance = cds_request.hookInstance
        record.fhir_server = _without_userinfo(cds_request.fhirServer)
        service = runtime.registry.resolve(service_id, cds_request.hook)
        try:
            context = context_model_for(service.hook).model_validate(cds_request.context)
        except ValidationError as exc:
            raise BadRequest(_describe_validation(exc), expression=["context"]) from None
        record.user_ref = context.userId
        record.patient_ref = f"Patient/{context.patientId}"
        record.encounter_ref = f"Encounter/{context.encounterId}" if context.encounterId else None
        locale = preferred_locale(request.headers.get("accept-language"), settings.locale)
        record.locale = locale
        authorization = cds_request.fhirAuthorization
        context_values = context.model_dump()
        deadline = time.monotonic() + settings.fhir_deadline_s
        data = await resolve_prefetch(
            prefetch=cds_request.prefetch,
            templates=service.prefetch,
            context=context_values,
            fhir_server=cds_request.fhirServer,
            access_token=authorization.access_token.get_secret_value() if authorization else None,
            # Security brief §2.2: a token scoped to another patient is never used (resolve_prefetch checks).
            authorized_patient=authorization.patient if authorization else None,
            token_expires_in=authorization.expires_in if authorization else None,
            token_scope=authorization.scope if authorization else None,
            fetcher=runtime.fetcher,
            allowed_bases=tuple(settings.fhir_allowed_bases) + caller.fhir_servers,
            deadline=deadline,
        )
        _record_data(record, data, raw)
        for key in sorted(service.essential_keys):
            essential = data.keys.get(key)
            if essential is None or not essential.obtained:
                failure = essential.failure if essential and essential.failure else "not obtainable"
                raise PreconditionFailed(
                    f"CDS Hooks prefetch key '{key}' was absent or its data could not be obtained ({failure})",
                    expression=[f"prefetch.{key}"],
                )
        outcome = service.handler(
            HookCall(request=cds_request, context=context_values, data=data, locale=locale, now=runtime.clock())
        )
        payload = outcome.response.to_json()
        record.cards = payload["cards"]
        record.rules_fired = outcome.rules_fired
        record.facts_used = outcome.facts_used
        record.ruleset_version = outcome.ruleset_version
        record.ruleset_hash = outcome.ruleset_hash
        response = json_response(payload)
    except CdsError as error:
        response = _failure(record, error)
    except AuditError:
        response = _failure(record, ServiceUnavailable("the audit store is unavailable; retry"))
    except Exception as exc:  # a bug still leaves an audit record: the class only, no content
        log.error("unhandled %s in service %s", type(exc).__name__, service_id)
        record.reason_class = f"internal-error:{type(exc).__name__}"
        body = operation_outcome("internal error", code="exception")
        response = Response(orjson.dumps(body), status_code=500, media_type="application/fhir+json")
    return await _audited(runtime, record, response, started)


def _failure(record: HookCallRecord, error: CdsError, prefix: str = "") -> Response:
    """Record a refusal by reason class (and the allow-listed issuer when known) and build its response."""
    record.reason_class = prefix + (getattr(error, "failure", None) or error.reason_class)
    if error.caller_iss and not record.iss:
        record.iss, record.kid = error.caller_iss, error.caller_kid
    return error_response(error)


async def _audited(runtime: Runtime, record: HookCallRecord, response: Response, started: float) -> Response:
    """Commit the record, then let the response go; a response that cannot be audited is not sent."""
    record.http_status = response.status_code
    record.responded_at = runtime.clock()
    record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    try:
        await runtime.audit.append_call(record)
    except AuditError:
        log.error("audit append failed for a %s response; answering 503", response.status_code)
        return error_response(ServiceUnavailable("the response could not be audited, so it is not sent"))
    return response


def _without_userinfo(url: str | None) -> str | None:
    """The FHIR base as recorded: never with a user:password part."""
    if url is None:
        return None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _record_caller(record: HookCallRecord, caller: Caller) -> None:
    record.iss, record.tenant, record.jti = caller.iss, caller.tenant, caller.jti
    record.kid, record.alg = caller.kid, caller.alg


def _record_data(record: HookCallRecord, data: ResolvedData, raw: bytes) -> None:
    record.prefetch = [
        PrefetchKeyState(
            key=key.key,
            received=key.received,
            resources=len(key.resources or ()),
            fetched=key.fetched,
            obtained=key.obtained,
        )
        for key in data.keys.values()
    ]
    record.queries = list(data.queries)
    record.token_use = data.token_use
    hasher = hashlib.sha256(raw)
    for key in sorted(data.keys):
        if data.keys[key].fetched:
            hasher.update(orjson.dumps(data.keys[key].resources, option=orjson.OPT_SORT_KEYS))
    record.input_digest = hasher.hexdigest()


def _feedback_record(item: FeedbackItem, service_id: str, received: datetime, caller: Caller) -> FeedbackRecord:
    reason = item.overrideReason.reason if item.overrideReason else None
    return FeedbackRecord(
        record_id=str(uuid.uuid4()),
        received_at=received,
        service_id=service_id,
        card_uuid=item.card,
        outcome=item.outcome,
        outcome_timestamp=item.outcomeTimestamp,
        accepted_suggestions=[s.id for s in item.acceptedSuggestions or ()],
        override_reason_system=reason.system if reason else None,
        override_reason_code=reason.code if reason else None,
        override_reason_display=reason.display if reason else None,
        override_comment=item.overrideReason.userComment if item.overrideReason else None,
        iss=caller.iss,
        tenant=caller.tenant,
        jti=caller.jti,
    )


async def handle_feedback(service_id: str, request: Request, runtime: RuntimeDep) -> Response:
    """Accepted feedback becomes feedback records; a refused feedback call is audited like a refused hook call."""
    started = time.perf_counter()
    try:
        return await _record_feedback(service_id, request, runtime)
    except (CdsError, AuditError) as error:
        cds_error = error if isinstance(error, CdsError) else ServiceUnavailable("the audit store is unavailable")
        record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock(), service_id=service_id)
        record.code_version = __version__
        return await _audited(runtime, record, _failure(record, cds_error, prefix="feedback:"), started)


async def _record_feedback(service_id: str, request: Request, runtime: Runtime) -> Response:
    settings = runtime.settings
    caller = await runtime.verifier.verify(
        request, _endpoint_url(settings, request), required=bool(settings.auth_required)
    )
    if not runtime.registry.exists(service_id):
        raise NotFound("no CDS service with this id")
    body, _ = await read_json_body(request, FeedbackRequest)
    received = runtime.clock()
    records = [_feedback_record(item, service_id, received, caller) for item in body.feedback]
    try:
        result = await runtime.audit.append_feedback(records)
    except AuditError:
        raise ServiceUnavailable("the feedback could not be recorded; send it again") from None
    return json_response({"stored": result.stored, "duplicates": result.duplicates})
