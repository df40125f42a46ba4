"""Circuit breaker per FHIR origin (security brief §4.2).

Keyed on the origin (scheme, host, port), never on the path: every path under one origin is the same server,
so a caller varying the path must not get a fresh breaker per path (issue 16 item 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

log = logging.getLogger("calcinosis_cds.fhir")

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


@dataclass(slots=True)
class CircuitBreaker:
    """Open after ``threshold`` consecutive failures, one half-open probe after ``reset_s``.

    A failure is a timeout, a transport error or a 5xx: the server is unavailable. A 4xx, a bad body or a
    rejected token say nothing about availability and count as a success for the breaker. A request refused
    on our side (invalid header value, our own slots full) never reached the server and is not counted at all.
    """

    threshold: int
    reset_s: float
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _State] = field(default_factory=dict)

    def allow(self, origin: str) -> bool:
        state = self._states.setdefault(origin, _State())
        if state.opened_at is None:
            return True
        if state.probing or self.clock() - state.opened_at < self.reset_s:
            return False
        # Half-open: exactly one request finds out whether the server is back.
        state.probing = True
        return True

    def record(self, origin: str, *, failed: bool) -> None:
        if not failed:
            # A closed breaker holds no state: the table only remembers origins that are failing.
            self._states.pop(origin, None)
            return
        state = self._states.setdefault(origin, _State())
        state.failures += 1
        if state.probing or state.failures >= self.threshold:
            if state.opened_at is None or state.probing:
                log.warning("FHIR circuit breaker for %s opened after %d consecutive failures", origin, state.failures)
            state.opened_at = self.clock()
        state.probing = False

    def release_probe(self, origin: str) -> None:
        """A probe that ended without a verdict (our own deadline) lets the next request probe instead."""
        state = self._states.get(origin)
        if state is not None:
            state.probing = False

    def counts(self) -> dict[str, int]:
        """How many origins are in each state (the ``cds_fhir_breakers`` gauge); healthy ones are forgotten."""
        counts = {"closed": 0, "open": 0, "half-open": 0}
        for origin in list(self._states):
            counts[self.state(origin)] += 1
        return counts

    def state(self, origin: str) -> BreakerState:
        current = self._states.get(origin)
        if current is None or current.opened_at is None:
            return "closed"
        if current.probing or self.clock() - current.opened_at >= self.reset_s:
            return "half-open"
        return "open"
