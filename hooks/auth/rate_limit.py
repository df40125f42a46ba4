"""Per-caller rate limit: a token bucket per verified issuer+tenant (or client address when anonymous).

Security brief §1.7 (429 per ``iss``/tenant) and §4.4 (OWASP API4, unrestricted resource consumption).
In-memory and per process: with several workers each enforces its own share, which is enough to stop one
runaway EHR integration from starving the others; a shared limiter would need a shared store.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter:
    """``limit_per_minute`` calls per key, refilled continuously, with bursts up to the same number."""

    def __init__(
        self, limit_per_minute: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity = float(limit_per_minute)
        self._rate = limit_per_minute / 60.0
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens, last update); LRU order so a flood of new anonymous addresses cannot grow it unbounded.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> int | None:
        """Take one token; None when allowed, else the whole seconds to wait (for ``Retry-After``)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            # Evicting the least recently seen key only ever grants it a full bucket again: fail-open by one burst.
            self._buckets.popitem(last=False)
        return None if allowed else max(1, math.ceil((1.0 - tokens) / self._rate))
