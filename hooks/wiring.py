"""Builds the runtime collaborators from settings: audit store, caller verifier, FHIR fetcher, registry.

Each seam is a Protocol (``AuditStore``, ``CallerVerifier``, ``FhirFetcher``); tests pass fakes or real
instances to ``create_app`` and this module fills in whatever was not given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from fastapi import FastAPI

from hooks.audit import AuditStore
from hooks.audit.factory import build_audit_store
from hooks.auth import CallerVerifier, NoAuth
from hooks.data_access import FhirFetcher
from hooks.readiness import ReadinessCheck, disk_check, writable_directories
from hooks.registry import ServiceRegistry
from hooks.runtime import Runtime
from hooks.settings import Settings

__all__ = ["build_registry", "build_runtime", "install_middleware"]

log = logging.getLogger("calcinosis_cds")


def build_registry(settings: Settings) -> ServiceRegistry:
    from hooks.services.calcinosis import calcinosis_assessment

    registry = ServiceRegistry()
    registry.register(
        calcinosis_assessment(settings.chemistry_lookback_days, settings.serology_lookback_days)
    )
    return registry


async def build_runtime(
    settings: Settings,
    *,
    registry: ServiceRegistry | None,
    audit_store: AuditStore | None,
    verifier: CallerVerifier | None,
    fetcher: FhirFetcher | None,
    clock: Callable[[], datetime] | None,
) -> Runtime:
    closers: list[Callable[[], Awaitable[None]]] = []
    readiness: list[ReadinessCheck] = []
    if not (settings.audit_dsn or "").startswith("memory:"):
        readiness.append(disk_check(writable_directories(settings.audit_dsn, settings.data_dir)))
    if audit_store is None:
        audit_store = build_audit_store(settings)
    await audit_store.open()
    closers.append(audit_store.close)
    if verifier is None:
        from hooks.auth.jwt_verifier import build_verifier

        # JWT verification from CDS_TRUST_FILE (refuses to start without one); NoAuth only in development.
        verifier = build_verifier(settings, audit_store, closers) if settings.auth_required else NoAuth()
    if fetcher is None:
        from hooks.fhir_client import HttpxFhirFetcher

        # One pooled client (and one circuit breaker per FHIR base) for the whole process.
        fhir_fetcher = HttpxFhirFetcher(settings)
        closers.append(fhir_fetcher.aclose)
        fetcher = fhir_fetcher
    health = getattr(fetcher, "health", None)
    if callable(health):
        readiness.append(_sync_check(health))
    workers = ThreadPoolExecutor(max_workers=settings.assess_workers, thread_name_prefix="calcinosis-assess")

    async def stop_workers() -> None:
        # A worker past its budget is not waited for: its answer was already refused.
        await asyncio.to_thread(workers.shutdown, wait=False, cancel_futures=True)

    closers.append(stop_workers)
    runtime = Runtime(
        settings=settings,
        registry=registry or build_registry(settings),
        audit=audit_store,
        verifier=verifier,
        fetcher=fetcher,
        closers=closers,
        readiness=readiness,
        workers=workers,
        call_slots=asyncio.Semaphore(settings.max_concurrent_calls),
    )
    if clock is not None:
        runtime.clock = clock
    return runtime


def _sync_check(check: Callable[[], list[str]]) -> ReadinessCheck:
    async def run() -> list[str]:
        return check()

    return run


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS for browser-based CDS clients (CDS Hooks 2.0 #cross-origin-resource-sharing).

    Only the origins in ``CDS_CORS_ORIGINS`` (none by default: EHRs call server to server). Browsers send a
    preflight for discovery, service and feedback because of the Authorization header. No credentials mode:
    the JWT travels in a header, never in cookies. The per-issuer rate limit lives in the JWT verifier, where
    the verified ``iss`` is known.
    """
    if not settings.cors_origins:
        return
    if "*" in settings.cors_origins and settings.environment == "production":
        # OWASP API8: a wildcard lets any web page drive the service from a clinician's browser.
        raise ValueError("CDS_CORS_ORIGINS='*' is refused in production; list the browser clients' origins")
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
        allow_credentials=False,
        max_age=600,
    )
