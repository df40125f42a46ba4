"""The process-wide runtime: the collaborators every request reads, behind one typed dependency.

Built once in the app's lifespan (``hooks.wiring.build_runtime``) and read in handlers through ``RuntimeDep``.
Kept apart from ``hooks.app`` so that the wiring can build it without importing the app (no import cycle).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from hooks.audit import AuditStore
from hooks.auth import CallerVerifier
from hooks.data_access import FhirFetcher
from hooks.metrics import ServiceMetrics
from hooks.readiness import ReadinessCheck
from hooks.registry import ServiceRegistry
from hooks.settings import Settings

__all__ = ["Clock", "Runtime", "RuntimeDep", "get_runtime", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Runtime:
    """Process-wide collaborators, built once in the lifespan and read through ``RuntimeDep``."""

    settings: Settings
    registry: ServiceRegistry
    audit: AuditStore
    verifier: CallerVerifier
    fetcher: FhirFetcher | None
    metrics: ServiceMetrics
    clock: Clock = utc_now
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Besides the audit ping: what /readyz checks (disks written to, FHIR pools); each returns its problems.
    readiness: list[ReadinessCheck] = field(default_factory=list)
    # Where request bodies are parsed and services assess (CPU-bound work off the event loop).
    workers: ThreadPoolExecutor | None = None
    # Service and feedback calls in progress (CDS_MAX_CONCURRENT_CALLS); past it a call is refused at once.
    call_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))


async def get_runtime(request: Request) -> Runtime:
    # Async on purpose: FastAPI runs a sync dependency on AnyIO's thread pool, a thread hop per request
    # for one attribute read (issue 14).
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
