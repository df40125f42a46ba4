"""Registry of CDS services, keyed by service id (CDS Hooks 2.0 #discovery).

One id may be offered for several hooks (#update-stale-guidance), so a call is dispatched on the pair
(id, request.hook): an unknown id is 404, a hook the id does not serve is 400.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hooks.data_access import ResolvedData
from hooks.errors import BadRequest, NotFound
from hooks.models import CdsRequest, CdsResponse, ServiceDescriptor

__all__ = ["HookCall", "HookOutcome", "ServiceDefinition", "ServiceRegistry"]


@dataclass(frozen=True, slots=True)
class HookCall:
    """Everything a service handler may read. ``now`` is passed in: handlers never read the clock."""

    request: CdsRequest
    context: Mapping[str, Any]
    data: ResolvedData
    locale: str
    now: datetime
    # What the service's ``prepare`` read from the context before any data was fetched (the draft orders).
    prepared: Any = None


@dataclass(slots=True)
class HookOutcome:
    response: CdsResponse
    rules_fired: list[str] = field(default_factory=list)
    facts_used: list[dict[str, Any]] = field(default_factory=list)
    ruleset_version: str | None = None
    ruleset_hash: str | None = None
    # The full assessment (``hooks.engine.snapshot``), kept with the audit record for the assessment page.
    snapshot: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LookBack:
    """How far back a key's results matter, and the search parameter that dates them (``Observation.date``)."""

    days: int
    date_param: str = "date"


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str]
    # Keys without which no safe assessment is possible: unobtainable -> 412 naming the key.
    essential_keys: frozenset[str]
    handler: Callable[[HookCall], HookOutcome]
    usage_requirements: str | None = None
    # Per key, the longest look-back any rule reads: a newest-first list that reaches past it is complete
    # without its later pages, and the service's own query asks for that window only (issue 11).
    look_back: Mapping[str, LookBack] = field(default_factory=dict)
    # Reads and strictly validates the hook's own context fields (order-sign's draftOrders) before any prefetch
    # is resolved or FHIR server called: a draft about another patient is a 400 that costs no query. Raises
    # BadRequest; its result reaches the handler as ``HookCall.prepared``.
    prepare: Callable[[Mapping[str, Any]], Any] | None = None

    def descriptor(self) -> ServiceDescriptor:
        return ServiceDescriptor(
            hook=self.hook,
            title=self.title,
            description=self.description,
            id=self.id,
            prefetch=dict(self.prefetch) or None,
            usageRequirements=self.usage_requirements,
        )


class ServiceRegistry:
    def __init__(self) -> None:
        self._services: dict[str, dict[str, ServiceDefinition]] = {}

    def register(self, service: ServiceDefinition) -> None:
        hooks = self._services.setdefault(service.id, {})
        if service.hook in hooks:
            raise ValueError(f"service {service.id!r} already serves {service.hook!r}")
        hooks[service.hook] = service

    def ids(self) -> tuple[str, ...]:
        return tuple(self._services)

    def resolve(self, service_id: str, hook: str | None) -> ServiceDefinition:
        hooks = self._services.get(service_id)
        if hooks is None:
            raise NotFound(f"no CDS service with id {service_id!r}")
        if hook is None:
            return next(iter(hooks.values()))
        service = hooks.get(hook)
        if service is None:
            raise BadRequest(
                f"service {service_id!r} serves {', '.join(sorted(hooks))}, not the hook in this request",
                expression=["hook"],
            )
        return service

    def exists(self, service_id: str) -> bool:
        return service_id in self._services

    def descriptors(self) -> list[ServiceDescriptor]:
        return [s.descriptor() for hooks in self._services.values() for s in hooks.values()]
