"""``HttpxFhirFetcher``: the process's one FHIR client, querying the EHR's FHIR server within a deadline.

Implements the "query ``fhirServer``" rows of the prefetch decision table (protocol brief §1.4; CDS Hooks
2.0 #fhir-resource-access) under the controls of the security brief:

* §2.3 SSRF: the allow-list (``hooks.fhir.allowlist``); no redirects; ``next`` links stay under
  ``fhirServer``; a size cap enforced while streaming; ``Content-Type`` must be FHIR JSON; every body is
  validated before use (``hooks.fhir.responses``).
* §2.2 / §2.4 token: the access token only ever goes into the ``Authorization`` header of a request to an
  allowed base. It is never logged, never put in a ``FhirQuery`` and never retried after a 401/403.
* §4.2 reliability: one pool per FHIR origin with bounded connections (``hooks.fhir.pool``), a per-request
  timeout, an overall deadline per hook call, at most one retry (timeout, transport error or 5xx) inside the
  remaining deadline, a circuit breaker per origin with a half-open probe (``hooks.fhir.breaker``).

Whatever a FHIR server answers, the fetch ends in a ``FetchResult``. A request refused locally (a token that
is not a valid header value, no free slot to the origin) says nothing about the server: it is neither retried
nor counted by the breaker. Large bodies are parsed on a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from hooks.audit.records import FhirQuery
from hooks.data_access import FetchResult, call_byte_budget, fetch_progress
from hooks.fhir.allowlist import base_allowed, origin_of, within_base
from hooks.fhir.breaker import CircuitBreaker
from hooks.fhir.pool import NoFreeSlot, OriginPools
from hooks.fhir.queries import encode_query, join_link, relative_query, resource_type, with_count
from hooks.fhir.responses import Outcome, Page, QueryFailure, read_body, read_page
from hooks.settings import Settings

__all__ = ["HttpxFhirFetcher"]

log = logging.getLogger("calcinosis_cds.fhir")

# Below this much time left a request cannot usefully complete: answering with what we have is better.
_MIN_ATTEMPT_S = 0.02
# Bodies above this are parsed on a worker thread: orjson takes ~10 ms per MiB, the loop must not wait.
_INLINE_PARSE_BYTES = 64 * 1024


@dataclass(slots=True)
class _Attempt:
    page: Page | None
    queries: list[FhirQuery]
    failure: str | None
    rejected: bool = False
    retryable: bool = False
    token_sent: bool = False


class HttpxFhirFetcher:
    """The process's one FHIR client (an ``httpx.AsyncClient`` over ``OriginPools``); implements ``FhirFetcher``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        connections_per_origin: int | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.breaker = CircuitBreaker(settings.fhir_breaker_failures, settings.fhir_breaker_reset_s, clock)
        self.pools = OriginPools(
            connections_per_origin=connections_per_origin or settings.fhir_connections_per_origin
        )
        self.client = httpx.AsyncClient(
            transport=self.pools,
            # Redirects are refused (SSRF): a 3xx is a failure, never followed.
            follow_redirects=False,
            timeout=httpx.Timeout(settings.fhir_request_timeout_s),
            headers={"Accept": "application/fhir+json", "Accept-Encoding": "identity", "User-Agent": "calcinosis-cds"},
            # Proxies from the environment would see the token; the EHR's base is reached directly.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def health(self) -> list[str]:
        """What ``/readyz`` reports about the FHIR side: saturated or leaking pools (empty when fine)."""
        return self.pools.health()

    # -- FhirFetcher -----------------------------------------------------------------------------------

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
        base = self._allowed(fhir_server, allowed_bases)
        relative = with_count(query.lstrip("/"), self.settings.fhir_search_count)
        if base is None:
            return self._refused(key, relative, "fhirServer is not an allowed FHIR base")
        # Built from fhirServer as sent (not the normalised form) so the Host header is the EHR's own.
        url = encode_query(fhir_server.rstrip("/") + "/" + relative)
        if not within_base(url, base):
            return self._refused(key, relative, "the query leaves the fhirServer base")
        return await self._pages(key, fhir_server, base, url, access_token, deadline, first_is_ehr_page=False)

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
        base = self._allowed(fhir_server, allowed_bases)
        if base is None:
            return self._refused(key, "(next page)", "fhirServer is not an allowed FHIR base")
        url = join_link(fhir_server, next_url)
        url = encode_query(url) if url is not None else None
        if url is None or not within_base(url, base):
            return self._refused(key, "(next page)", "the next link leaves the fhirServer base")
        return await self._pages(key, fhir_server, base, url, access_token, deadline, first_is_ehr_page=True)

    # -- paging ----------------------------------------------------------------------------------------

    def _allowed(self, fhir_server: str, allowed_bases: tuple[str, ...]) -> str | None:
        return base_allowed(fhir_server, allowed_bases, allow_loopback_http=self.settings.fhir_allow_loopback_http)

    @staticmethod
    def _refused(key: str, relative: str, reason: str) -> FetchResult:
        # Nothing was sent anywhere, so the token was not used.
        query = FhirQuery(key, resource_type(relative), relative, None, 0, 0.0, "not-allowed")
        log.warning("FHIR query for key %s refused: %s", key, reason)
        return FetchResult(None, [query], failure=reason)

    async def _pages(
        self,
        key: str,
        fhir_server: str,
        base: str,
        url: str,
        token: str | None,
        deadline: float,
        *,
        first_is_ehr_page: bool,
    ) -> FetchResult:
        """First page (or the EHR's ``next`` page) and every further ``next`` page up to the page cap."""
        queries: list[FhirQuery] = []
        resources: list[dict[str, Any]] = []
        # The EHR already spent one page of the cap when it sent a prefetch Bundle with a next link.
        pages_left = self.settings.fhir_page_cap - (1 if first_is_ehr_page else 0)
        sent = False
        current: str | None = url
        while current is not None:
            if pages_left <= 0:
                return FetchResult(
                    None, queries, failure=f"more than {self.settings.fhir_page_cap} pages", token_sent=sent
                )
            pages_left -= 1
            relative = relative_query(current, base)
            attempt = await self._get_with_retry(key, base, current, relative, token, deadline)
            queries.extend(attempt.queries)
            sent = sent or attempt.token_sent
            if attempt.page is None:
                return FetchResult(
                    None, queries, failure=attempt.failure, token_rejected=attempt.rejected, token_sent=sent
                )
            resources.extend(attempt.page.resources)
            current = None
            if attempt.page.next_url is not None:
                candidate = join_link(fhir_server, attempt.page.next_url)
                candidate = encode_query(candidate) if candidate is not None else None
                if candidate is None or not within_base(candidate, base):
                    return FetchResult(
                        None, queries, failure="the next link leaves the fhirServer base", token_sent=sent
                    )
                current = candidate
        return FetchResult(resources, queries, token_sent=sent)

    # -- one GET, with breaker and retry ---------------------------------------------------------------

    async def _get_with_retry(
        self, key: str, base: str, url: str, relative: str, token: str | None, deadline: float
    ) -> _Attempt:
        attempt = await self._get_once(key, base, url, relative, token, deadline)
        if attempt.page is None and attempt.retryable and deadline - self.clock() > _MIN_ATTEMPT_S:
            # One retry for an idempotent GET, only inside the remaining deadline (brief §4.2).
            second = await self._get_once(key, base, url, relative, token, deadline)
            second.queries[:0] = attempt.queries
            second.token_sent = second.token_sent or attempt.token_sent
            return second
        return attempt

    async def _get_once(
        self, key: str, base: str, url: str, relative: str, token: str | None, deadline: float
    ) -> _Attempt:
        started = self.clock()
        remaining = deadline - started
        kind = resource_type(relative)
        origin = origin_of(base)
        if remaining <= _MIN_ATTEMPT_S:
            query = FhirQuery(key, kind, relative, None, 0, 0.0, "deadline")
            return _Attempt(None, [query], "the FHIR deadline passed before the query could be sent")
        probe = self.breaker.state(origin) == "half-open"
        if not self.breaker.allow(origin):
            query = FhirQuery(key, kind, relative, None, 0, 0.0, "circuit-open")
            return _Attempt(None, [query], "the FHIR server is failing (circuit breaker open)")
        progress = fetch_progress()
        if progress is not None:
            # Kept if the caller's own deadline cuts this request: it may already have reached the server.
            progress.in_flight = FhirQuery(key, kind, relative, None, 0, 0.0, "deadline")
            progress.in_flight_token = bool(token)
        try:
            attempt = await self._attempt(key, origin, url, relative, token, deadline, started, probe=probe)
        finally:
            if probe:
                # Whatever happened (even an exception or a cancellation), the probe ends here. After a
                # verdict (record) this changes nothing; without one, the next request probes instead of
                # the server staying cut off until restart.
                self.breaker.release_probe(origin)
        if progress is not None:
            progress.in_flight = None
            progress.queries.extend(attempt.queries)
            progress.token_sent = progress.token_sent or attempt.token_sent
        return attempt

    async def _attempt(
        self,
        key: str,
        origin: str,
        url: str,
        relative: str,
        token: str | None,
        deadline: float,
        started: float,
        *,
        probe: bool,
    ) -> _Attempt:
        kind = resource_type(relative)
        budget = min(self.settings.fhir_request_timeout_s, deadline - started)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            try:
                async with self.pools.slot(origin, budget):
                    # Time spent waiting for a slot is not the server's: the request gets what is left.
                    budget = min(self.settings.fhir_request_timeout_s, deadline - self.clock())
                    async with asyncio.timeout(max(budget, 0.0)):
                        page = await self._request(url, relative, headers, budget)
            except (TimeoutError, asyncio.CancelledError):
                # A cancellation (our deadline, or the hook call's) must never leave a pool slot behind.
                await self.pools.reclaim(origin)
                raise
        except NoFreeSlot:
            ms = round((self.clock() - started) * 1000, 3)
            query = FhirQuery(key, kind, relative, None, 0, ms, "error")
            reason = "too many queries already in flight to this FHIR server"
            log.info("FHIR %s query for key %s not sent: %s", kind, key, reason)
            return _Attempt(None, [query], reason)
        except QueryFailure as failure:
            if not failure.local:
                self.breaker.record(origin, failed=failure.unavailable)
            ms = round((self.clock() - started) * 1000, 3)
            query = FhirQuery(key, kind, relative, failure.status, 0, ms, failure.outcome)
            rejected = failure.outcome == "rejected" and bool(token)
            log.info("FHIR %s query for key %s failed: %s (%s)", kind, key, failure.outcome, failure.reason)
            return _Attempt(
                None, [query], failure.reason, rejected=rejected, retryable=failure.unavailable,
                token_sent=bool(token) and not failure.local,
            )
        except TimeoutError:
            cut_by_deadline = budget < self.settings.fhir_request_timeout_s
            if not (cut_by_deadline and probe):
                self.breaker.record(origin, failed=True)
            # A probe cut short by our own deadline gives no verdict: _get_once releases it for the next one.
            ms = round((self.clock() - started) * 1000, 3)
            outcome: Outcome = "deadline" if cut_by_deadline else "timeout"
            query = FhirQuery(key, kind, relative, None, 0, ms, outcome)
            log.info("FHIR %s query for key %s timed out after %.0f ms", kind, key, ms)
            return _Attempt(
                None, [query], f"the FHIR server did not answer within {budget:.2f} s",
                retryable=not cut_by_deadline, token_sent=bool(token),
            )
        except Exception as exc:
            # Safety net for an answer of a shape nothing above foresaw: a bad response from a server that did
            # answer (a success for the breaker), never an exception for the hook call. Only the class is
            # logged: a message could quote the URL or the body.
            self.breaker.record(origin, failed=False)
            ms = round((self.clock() - started) * 1000, 3)
            query = FhirQuery(key, kind, relative, None, 0, ms, "error")
            log.warning("FHIR %s query for key %s: unreadable answer (%s)", kind, key, type(exc).__name__)
            return _Attempt(
                None, [query], f"the FHIR server answered something unreadable ({type(exc).__name__})",
                token_sent=bool(token),
            )
        self.breaker.record(origin, failed=False)
        ms = round((self.clock() - started) * 1000, 3)
        query = FhirQuery(key, kind, relative, page.status, len(page.resources), ms, "ok")
        log.debug("FHIR %s query for key %s: %d resources in %.0f ms", kind, key, len(page.resources), ms)
        return _Attempt(page, [query], None, token_sent=bool(token))

    async def _request(self, url: str, relative: str, headers: dict[str, str], budget: float) -> Page:
        limit = self.settings.fhir_max_response_bytes
        budget_left = call_byte_budget()
        if budget_left is not None:
            limit = min(limit, budget_left.remaining)
        try:
            async with self.client.stream("GET", url, headers=headers, timeout=budget) as response:
                body = await read_body(response, limit)
                status = response.status_code
        except QueryFailure as failure:
            call_cap = budget_left is not None and limit < self.settings.fhir_max_response_bytes
            if failure.outcome == "too-large" and budget_left is not None and call_cap:
                raise QueryFailure(
                    "too-large", f"the FHIR answers of this call are over {budget_left.total} bytes", failure.status
                ) from None
            raise
        except httpx.PoolTimeout:
            # Our own pool is full: nothing was sent, and the server may be perfectly healthy.
            raise QueryFailure("error", "no free connection in the local pool", local=True) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeEncodeError) as exc:
            # The HTTP library refused to send this request (e.g. CR/LF or non-ASCII in the token): a fault of
            # this call's input, so one caller cannot open the breaker for everyone. Class name only: the
            # exception can hold the header value, that is the token.
            raise QueryFailure("error", f"the request could not be sent ({type(exc).__name__})", local=True) from None
        except httpx.HTTPError as exc:
            # Transport failures say nothing secret; their text could hold the URL, so only the class is kept.
            raise QueryFailure("error", f"transport error ({type(exc).__name__})", unavailable=True) from None
        if budget_left is not None:
            budget_left.charge(len(body))
        if len(body) <= _INLINE_PARSE_BYTES:
            return read_page(body, relative, status)
        return await asyncio.to_thread(read_page, body, relative, status)
