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
from hooks.auth.jwt_verifier import build_verifier, load_trust
from hooks.data_access import FhirFetcher
from hooks.metrics import MeteredFetcher, ServiceMetrics
from hooks.readiness import ReadinessCheck, disk_check, writable_directories
from hooks.registry import ServiceRegistry
from hooks.runtime import Runtime, utc_now
from hooks.settings import Settings

__all__ = ["build_registry", "build_runtime", "install_middleware"]

log = logging.getLogger("calcinosis_cds")


def build_registry(settings: Settings) -> ServiceRegistry:
    from hooks.services.calcinosis import calcinosis_assessment
    from hooks.services.medication_safety import medication_safety_services

    registry = ServiceRegistry()
    registry.register(
        calcinosis_assessment(settings.chemistry_lookback_days, settings.serology_lookback_days)
    )
    # Issue 15: one id on order-select and order-sign.
    for service in medication_safety_services(settings.chemistry_lookback_days, settings.serology_lookback_days):
        registry.register(service)
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
    """Open what the service needs; whatever was opened is closed again if a later step refuses to start.

    Refusals (``hooks.startup.REFUSALS``): ``AuditError`` from the store, ``TrustConfigError`` from the trust file.
    """
    now = clock or utc_now
    closers: list[Callable[[], Awaitable[None]]] = []
    readiness: list[ReadinessCheck] = []
    if not (settings.audit_dsn or "").startswith("memory:"):
        readiness.append(disk_check(writable_directories(settings.audit_dsn, settings.data_dir)))
    trust = None
    if verifier is None and settings.auth_required:
        # Read (or refused) before the audit store is opened: a refusal leaves nothing behind.
        trust = load_trust(settings)
    try:
        if audit_store is None:
            audit_store = build_audit_store(settings, clock=now)
        await audit_store.open()
        closers.append(audit_store.close)
        # The services (knowledge, edsnlp: seconds of start-up) are built once the trust file and the audit
        # store have not refused: a refusal is then said within about a second of the start.
        registry = registry or build_registry(settings)
        metrics = ServiceMetrics(registry.ids(), {d.hook for d in registry.descriptors()})
        if verifier is None:
            # JWT verification from CDS_TRUST_FILE; NoAuth only with authentication off (development).
            # Token times are judged by the service's own clock, like everything else it records.
            verifier = NoAuth() if trust is None else build_verifier(
                settings, trust, audit_store, closers, clock=lambda: now().timestamp(), on_reject=metrics.jwt_rejected
            )
        if fetcher is None:
            from hooks.fhir_client import HttpxFhirFetcher

            # One pooled client (and one circuit breaker per FHIR origin) for the whole process.
            fhir_fetcher = HttpxFhirFetcher(settings)
            closers.append(fhir_fetcher.aclose)
            metrics.watch_breakers(fhir_fetcher.breaker.counts)
            fetcher = fhir_fetcher
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    health = getattr(fetcher, "health", None)
    if callable(health):
        readiness.append(_sync_check(health))
    workers = ThreadPoolExecutor(max_workers=settings.assess_workers, thread_name_prefix="calcinosis-assess")

    async def stop_workers() -> None:
        # A worker past its budget is not waited for: its answer was already refused.
        await asyncio.to_thread(workers.shutdown, wait=False, cancel_futures=True)

    closers.append(stop_workers)
    return Runtime(
        settings=settings,
        registry=registry,
        audit=audit_store,
        verifier=verifier,
        fetcher=MeteredFetcher(fetcher, metrics),
        metrics=metrics,
        clock=now,
        closers=closers,
        readiness=readiness,
        workers=workers,
        call_slots=asyncio.Semaphore(settings.max_concurrent_calls),
    )


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
