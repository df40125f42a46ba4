"""Prometheus metrics of one service process, served as ``GET /metrics`` (docs/metrics.md).

Each ``Runtime`` has its own ``CollectorRegistry`` (no process-global state), filled by the pipeline
(requests, stages, cards, audit appends, FHIR query outcomes), the JWT verifier (rejections by reason class)
and the FHIR client's circuit breakers (read at scrape time).

No PHI and no unbounded label: service ids and hooks come from the service registry (anything else is
``unknown``/``other``), statuses are HTTP codes, card kinds and indicators are the card contract's
vocabulary, and reason classes and query outcomes are code literals, capped in number all the same. No
label ever holds a patient, a user, an issuer, a hookInstance, a path or a URL.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hooks import __version__
from hooks.audit.records import FhirQuery
from hooks.data_access import FetchResult, FhirFetcher

__all__ = ["CARD_KINDS", "CONTENT_TYPE", "STAGES", "MeteredFetcher", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No ``*_created`` series: they double the exposition and no dashboard or alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
STAGES = ("prefetch_resolution", "fhir_fallback", "engine", "audit_append")
ENDPOINTS = ("discovery", "service", "feedback")
# The card contract's kinds and indicators (README "Card contract").
CARD_KINDS = frozenset({"subtype-assessment", "red-flag", "missing-workup", "therapy-options", "risk", "order-safety"})
INDICATORS = frozenset({"info", "warning", "critical"})
BREAKER_STATES = ("closed", "open", "half-open")
# Seconds: a full-prefetch call takes about 3 ms, the FHIR deadline is 1.5 s, the audit budget 3 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0)
_CLASS = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_MAX_CLASSES = 40


class _BoundedLabel:
    """Code-literal label values (reason classes, query outcomes), at most ``limit`` distinct; else ``other``."""

    def __init__(self, limit: int = _MAX_CLASSES) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = str(value)
        if not _CLASS.match(text):
            return "other"
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(text)
            return text


class _BreakerCollector(Collector):
    """How many FHIR bases are in each circuit-breaker state, read from the breakers at scrape time."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Mapping[str, int]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("cds_fhir_breakers", "FHIR bases by circuit-breaker state", labels=["state"])
        totals = dict.fromkeys(BREAKER_STATES, 0)
        for source in self.sources:
            for state, count in source().items():
                if state in totals:
                    totals[state] += count
        for state, count in totals.items():
            family.add_metric([state], count)
        yield family


class ServiceMetrics:
    """The metrics of one service process. ``services``/``hooks``: what the registry offers (label values)."""

    def __init__(self, services: Iterable[str], hooks: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self._services = frozenset(services)
        self._hooks = frozenset(hooks)
        self._reasons = _BoundedLabel()
        self._outcomes = _BoundedLabel()
        registry = self.registry
        self.requests = Counter(
            "cds_requests", "CDS Hooks requests answered, by endpoint, service, hook and HTTP status",
            ["endpoint", "service", "hook", "status"], registry=registry,
        )
        self.stage_seconds = Histogram(
            "cds_stage_duration_seconds", "Time spent per stage of a hook call (FHIR fallback: per prefetch key)",
            ["stage"], buckets=_BUCKETS, registry=registry,
        )
        self.cards = Counter("cds_cards", "Cards returned, by kind and indicator", ["kind", "indicator"],
                             registry=registry)
        self.audit_failures = Counter(
            "cds_audit_append_failures", "Audit appends that failed, by record type (the answer was a 503)",
            ["record"], registry=registry,
        )
        self.fhir_queries = Counter(
            "cds_fhir_fallback_queries", "FHIR fallback queries by outcome", ["outcome"], registry=registry
        )
        self.jwt_rejections = Counter(
            "cds_jwt_rejections", "Refused CDS client JWTs, by reason class", ["reason"], registry=registry
        )
        self.build = Gauge("cds_build_info", "calcinosis-cds version of this process (always 1)", ["version"],
                           registry=registry)
        self.build.labels(__version__).set(1)
        self._breakers = _BreakerCollector()
        registry.register(self._breakers)
        # Every stage and failure series exists from the start, so rate() and alerts see zeros, not gaps.
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for record in ("call", "feedback"):
            self.audit_failures.labels(record)

    # ------------------------------------------------------------------ recording

    def request(self, endpoint: str, service_id: str | None, hook: str | None, status: int) -> None:
        service = "none" if service_id is None else service_id if service_id in self._services else "unknown"
        hook_label = "none" if hook is None else hook if hook in self._hooks else "other"
        self.requests.labels(endpoint, service, hook_label, str(status)).inc()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(name).observe(time.perf_counter() - started)

    def audit_failed(self, record: str) -> None:
        self.audit_failures.labels(record).inc()

    def card_shown(self, card: Mapping[str, Any]) -> None:
        extension = card.get("extension")
        ours = extension.get("calcinosis-cds") if isinstance(extension, Mapping) else None
        kind = ours.get("kind") if isinstance(ours, Mapping) else None
        indicator = card.get("indicator")
        self.cards.labels(kind if kind in CARD_KINDS else "other",
                          indicator if indicator in INDICATORS else "other").inc()

    def fhir_answered(self, queries: Iterable[FhirQuery]) -> None:
        for query in queries:
            self.fhir_queries.labels(self._outcomes(query.outcome)).inc()

    def jwt_rejected(self, reason: str) -> None:
        self.jwt_rejections.labels(self._reasons(reason)).inc()

    def watch_breakers(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._breakers.sources.append(counts)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredFetcher:
    """A ``FhirFetcher`` that times each key's fetch (stage ``fhir_fallback``) and delegates the rest."""

    def __init__(self, inner: FhirFetcher, metrics: ServiceMetrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def fetch(
        self,
        *,
        key: str,
        fhir_server: str,
        query: str,
        access_token: str | None,
        deadline: float,
        allowed_bases: tuple[str, ...],
    ) -> FetchResult:
        with self._metrics.stage("fhir_fallback"):
            return await self.inner.fetch(key=key, fhir_server=fhir_server, query=query, access_token=access_token,
                                          deadline=deadline, allowed_bases=allowed_bases)

    async def follow_next(
        self,
        *,
        key: str,
        fhir_server: str,
        next_url: str,
        access_token: str | None,
        deadline: float,
        allowed_bases: tuple[str, ...],
    ) -> FetchResult:
        with self._metrics.stage("fhir_fallback"):
            return await self.inner.follow_next(key=key, fhir_server=fhir_server, next_url=next_url,
                                                access_token=access_token, deadline=deadline,
                                                allowed_bases=allowed_bases)
