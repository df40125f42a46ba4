"""Connections to FHIR servers: one bounded pool per origin, gated by as many slots as it has connections.

Issue 16 item 1: with one shared pool of 100 connections, a burst against a server that never answers filled
the pool, and requests cancelled while queued inside httpcore (encode/httpcore#1093, open, unfixed in the
latest httpcore 1.0.9) left connection slots that were never reclaimed: every later FHIR query failed, to any
server, until restart. Two measures make a cancellation unable to leak:

* **No queueing inside httpcore.** Each origin (scheme, host, port) has its own ``httpx.AsyncHTTPTransport``
  with ``max_connections = connections_per_origin`` and an ``asyncio.Semaphore`` of the same size in front of
  it. A request only reaches httpcore holding a slot, so httpcore always has a connection to give at once
  and never parks a request in ``wait_for_connection`` (the only place the bug bites). Waiting happens on the
  semaphore, which a cancellation always leaves consistent.
* **Reclaim what leaks anyway.** After a request that ended by cancellation or timeout, the pool is checked:
  connections that are neither idle nor closed beyond the requests in flight on that transport belong to no
  one. The transport is then retired (new requests get a fresh one; the old one is closed once its own
  requests end), so a leak can never outlive the requests that were running when it happened.

``health()`` tells ``/readyz`` about an origin whose slots are all taken with callers waiting, or a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from hooks.fhir.allowlist import origin_of

__all__ = ["NoFreeSlot", "OriginPools"]

log = logging.getLogger("calcinosis_cds.fhir")


class NoFreeSlot(Exception):
    """All of the origin's slots stayed taken for the whole wait: our limit, nothing was sent."""


class _Counted(httpx.AsyncByteStream):
    """A response body that reports when it is closed, so the transport knows its requests in flight."""

    def __init__(self, stream: httpx.AsyncByteStream, transport: _Transport) -> None:
        self._stream = stream
        self._transport = transport
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._closed:
                self._closed = True
                await self._transport.finished()


@dataclass(slots=True)
class _Transport:
    inner: httpx.AsyncHTTPTransport
    in_flight: int = 0
    retired: bool = False
    closed: bool = False

    async def finished(self) -> None:
        self.in_flight -= 1
        if self.retired and self.in_flight == 0:
            await self.close()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.inner.aclose()

    def orphans(self) -> int:
        """Connections busy beyond the requests in flight here: owned by no request, so they never free up."""
        # httpx 0.28 keeps the httpcore pool as ``_pool`` (pinned exactly in pyproject; tests/hooks/fhir
        # reproduce the leak and fail if this stops seeing it).
        pool = getattr(self.inner, "_pool", None)
        connections = getattr(pool, "connections", [])
        busy = sum(1 for c in connections if not c.is_idle() and not c.is_closed())
        return max(0, busy - self.in_flight)


@dataclass(slots=True)
class _Origin:
    slots: asyncio.Semaphore
    transport: _Transport
    size: int
    waiting: int = 0
    in_use: int = 0
    retired: list[_Transport] = field(default_factory=list)


class OriginPools(httpx.AsyncBaseTransport):
    """The ``httpx.AsyncClient`` transport of the FHIR client: routes each request to its origin's pool."""

    def __init__(self, *, connections_per_origin: int, keepalive_expiry_s: float = 30.0) -> None:
        if connections_per_origin < 1:
            raise ValueError("connections_per_origin must be at least 1")
        self.connections_per_origin = connections_per_origin
        self.keepalive_expiry_s = keepalive_expiry_s
        # Bounded by the allow-list: only allowed origins ever get a pool.
        self._origins: dict[str, _Origin] = {}

    def _new_transport(self) -> _Transport:
        limits = httpx.Limits(
            max_connections=self.connections_per_origin,
            max_keepalive_connections=self.connections_per_origin,
            keepalive_expiry=self.keepalive_expiry_s,
        )
        # Proxies from the environment would see the token; redirects are refused by the client.
        return _Transport(httpx.AsyncHTTPTransport(limits=limits, trust_env=False, retries=0))

    def _origin(self, origin: str) -> _Origin:
        state = self._origins.get(origin)
        if state is None:
            size = self.connections_per_origin
            state = _Origin(asyncio.Semaphore(size), self._new_transport(), size)
            self._origins[origin] = state
        return state

    @contextlib.asynccontextmanager
    async def slot(self, origin: str, wait_s: float) -> AsyncIterator[None]:
        """One of the origin's slots (= one of its connections), waited for at most ``wait_s``."""
        state = self._origin(origin)
        state.waiting += 1
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await state.slots.acquire()
        except TimeoutError:
            raise NoFreeSlot(origin) from None
        finally:
            state.waiting -= 1
        state.in_use += 1
        try:
            yield
        finally:
            state.in_use -= 1
            state.slots.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        state = self._origin(origin_of(request.url))
        transport = state.transport
        transport.in_flight += 1
        try:
            response = await transport.inner.handle_async_request(request)
        except BaseException:
            await transport.finished()
            raise
        if not isinstance(response.stream, httpx.AsyncByteStream):
            await transport.finished()
            raise TypeError("an async transport answered a synchronous stream")
        response.stream = _Counted(response.stream, transport)
        return response

    async def reclaim(self, origin: str) -> bool:
        """Retire the origin's transport when it holds connections no request owns; True when it did."""
        state = self._origins.get(origin)
        if state is None or state.transport.orphans() == 0:
            return False
        leaked = state.transport
        log.warning("FHIR pool for %s held %d orphaned connections: replaced", origin, leaked.orphans())
        leaked.retired = True
        state.transport = self._new_transport()
        if leaked.in_flight == 0:
            await leaked.close()
        else:
            state.retired.append(leaked)
        state.retired = [t for t in state.retired if not t.closed]
        return True

    def health(self) -> list[str]:
        """Problems ``/readyz`` reports: a saturated origin (all slots taken, callers waiting) or a leak."""
        problems = []
        for origin, state in sorted(self._origins.items()):
            if state.in_use >= state.size and state.waiting > 0:
                problems.append(
                    f"FHIR connections to {origin} saturated ({state.in_use}/{state.size} in use, "
                    f"{state.waiting} waiting)"
                )
            orphans = state.transport.orphans()
            if orphans:
                problems.append(f"FHIR pool for {origin} holds {orphans} connections no request owns")
        return problems

    def in_use(self, origin: str) -> int:
        state = self._origins.get(origin)
        return state.in_use if state else 0

    async def aclose(self) -> None:
        for state in self._origins.values():
            for transport in (state.transport, *state.retired):
                await transport.close()
        self._origins.clear()
