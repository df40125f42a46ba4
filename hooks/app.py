"""The FastAPI application: discovery, service calls, feedback, health.

CDS Hooks 2.0: ``GET {base}/cds-services`` (#discovery), ``POST {base}/cds-services/{id}``
(#calling-a-cds-service), ``POST {base}/cds-services/{id}/feedback`` (#feedback). Every non-2xx answer
carries an OperationOutcome (3.0 ballot, forward compatible) and never echoes request content.
The request pipelines live in ``hooks.pipeline``, the HTTP plumbing in ``hooks.web``, the runtime in
``hooks.runtime`` and its construction in ``hooks.wiring``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from hooks import __version__
from hooks.audit import AuditError, AuditStore, HookCallRecord
from hooks.auth import CallerVerifier
from hooks.data_access import FhirFetcher
from hooks.errors import (
    BadRequest,
    CdsError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from hooks.hot_route import CdsApp
from hooks.metrics import CONTENT_TYPE
from hooks.models import CdsRequest, CdsResponse, DiscoveryResponse, FeedbackRequest
from hooks.pages.routes import install_pages
from hooks.pipeline import audited, handle_feedback, handle_service_call, refusal_response
from hooks.registry import ServiceRegistry
from hooks.runtime import Clock, Runtime, RuntimeDep
from hooks.settings import Settings, get_settings
from hooks.web import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    describe_validation,
    endpoint_url,
    error_response,
    internal_error_response,
    json_response,
)
from hooks.wiring import build_runtime, install_middleware

__all__ = ["Runtime", "create_app"]

log = logging.getLogger("calcinosis_cds")


def create_app(
    settings: Settings | None = None,
    *,
    registry: ServiceRegistry | None = None,
    audit_store: AuditStore | None = None,
    verifier: CallerVerifier | None = None,
    fetcher: FhirFetcher | None = None,
    clock: Clock | None = None,
) -> CdsApp:
    """Build the service. Collaborators not given are built from settings in the lifespan.

    ``app.state.prepare()`` builds them ahead of the lifespan: ``calcinosis-cds serve`` calls it before the
    server starts, so that a refusal (``hooks.startup.REFUSALS``) is one line and exit code 2.
    Raises ``SettingsError`` for settings refused in production.
    """
    settings = settings or get_settings()
    settings.check_service()

    async def prepare() -> Runtime:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is None:
            runtime = await build_runtime(
                settings,
                registry=registry,
                audit_store=audit_store,
                verifier=verifier,
                fetcher=fetcher,
                clock=clock,
            )
            app.state.runtime = runtime
        return runtime

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await prepare()
        try:
            yield
        finally:
            app.state.runtime = None
            for close in reversed(runtime.closers):
                await close()

    app = CdsApp(
        title="calcinosis-cds",
        version=__version__,
        description="CDS Hooks 2.0 service: calcinosis cutis subtype, work-up, therapy options and red flags.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.prepare = prepare
    # With CORS configured, service calls take the full stack (the CORS middleware answers for them).
    app.hot_lane = not settings.cors_origins
    _install_error_handlers(app)
    _install_routes(app)
    install_pages(app)
    if settings.metrics_enabled:
        _install_metrics(app)
    _install_openapi(app)
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
        return error_response(BadRequest(describe_validation(exc)))

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
        # This handler runs outside SecurityHeadersMiddleware, so the response carries the headers itself.
        return internal_error_response(security_headers=True)


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


_JWT_SCHEME = "cdsClientJwt"
_ACCEPT_LANGUAGE = {
    "name": "Accept-Language", "in": "header", "required": False,
    "description": "en or fr (RFC 9110 q-values); the configured locale otherwise",
    "schema": {"type": "string", "maxLength": 256},
}


def _install_openapi(app: FastAPI) -> None:
    """Request bodies are read by hand (415/413/400 before parsing), so their schemas are declared through
    ``openapi_extra``; their nested models must then be added to ``components`` for the refs to resolve.

    The document says what the code does (issue 16 item 9): no 422 (validation errors are 400
    OperationOutcomes), the CDS client JWT as a bearer scheme (optional on discovery), Accept-Language on calls.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            components = spec.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            components["securitySchemes"] = {_JWT_SCHEME: {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "CDS Hooks 2.0 #trusting-cds-clients: a JWT signed by the CDS client",
            }}
            for path, item in spec.get("paths", {}).items():
                for method, operation in item.items():
                    content = operation.get("requestBody", {}).get("content", {})
                    for media in content.values():
                        schemas.update(media.get("schema", {}).pop("$defs", {}))
                    operation.get("responses", {}).pop("422", None)
                    if path.startswith("/cds-services"):
                        # Discovery: a JWT is optional (CDS_DISCOVERY_AUTH=optional, the default).
                        optional = method == "get"
                        operation["security"] = [{_JWT_SCHEME: []}, *([{}] if optional else [])]
                    if method == "post" and path.startswith("/cds-services/"):
                        operation.setdefault("parameters", []).append(dict(_ACCEPT_LANGUAGE))
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_routes(app: FastAPI) -> None:
    @app.get(
        "/cds-services",
        response_model=DiscoveryResponse,
        response_model_exclude_none=True,
        responses=_documented(401, 429, 503),
        tags=["cds-hooks"],
    )
    async def discovery(request: Request, runtime: RuntimeDep) -> Response:
        """CDS Hooks 2.0 #discovery: the services this endpoint offers, with their prefetch templates."""
        settings = runtime.settings
        if settings.discovery_auth != "off" and settings.auth_required:
            started = time.perf_counter()
            try:
                await runtime.verifier.verify(
                    request, endpoint_url(settings, request), required=settings.discovery_auth == "required"
                )
            except (CdsError, AuditError) as error:
                # Failed authentication is security-relevant wherever it happens: audit it too.
                refused = error if isinstance(error, CdsError) else ServiceUnavailable("audit store unavailable")
                record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock())
                record.code_version = __version__
                response = refusal_response(record, refused, prefix="discovery:")
                return await audited(runtime, record, response, started, endpoint="discovery")
        runtime.metrics.request("discovery", None, None, 200)
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
        responses={503: {"description": "Not ready: the audit store, a disk or the FHIR pools (named)"}},
    )
    async def readyz(runtime: RuntimeDep) -> Response:
        """The audit store answers, the disks written to accept writes, no FHIR pool is saturated or leaked."""
        problems: list[str] = []
        try:
            await runtime.audit.ping()
        except AuditError:
            problems.append("audit store unreachable")
        for check in runtime.readiness:
            problems.extend(await check())
        if problems:
            return error_response(ServiceUnavailable("; ".join(problems)))
        return json_response({"status": "ready"})


def _install_metrics(app: FastAPI) -> None:
    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"description": "Prometheus text format (docs/metrics.md)",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(runtime: RuntimeDep) -> Response:
        """Prometheus metrics (CDS_METRICS_ENABLED); no PHI. Keep it off the public ingress."""
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
