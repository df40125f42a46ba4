"""Querying the EHR's FHIR server when prefetch is incomplete, safely and within a deadline.

Implements the "query ``fhirServer``" rows of the prefetch decision table (protocol brief §1.4; CDS Hooks
2.0 #fhir-resource-access) under the controls of the security brief:

* §2.3 SSRF: ``fhirServer`` must match an allow-list (exact scheme, host, port and path prefix after
  normalisation); https only, plain http on loopback only when ``fhir_allow_loopback_http`` is set;
  no redirects; ``next`` links must stay under ``fhirServer``; a size cap enforced while streaming;
  ``Content-Type`` must be FHIR JSON; every body is validated before use.
* §2.2 / §2.4 token: the access token only ever goes into the ``Authorization`` header of a request to an
  allowed base. It is never logged, never put in a ``FhirQuery`` and never retried after a 401/403.
* §4.2 reliability: one pooled client per process, a per-request timeout, an overall deadline per hook
  call, at most one retry (timeout, transport error or 5xx) inside the remaining deadline, a circuit
  breaker per FHIR base with a half-open probe, and a bound on requests in flight per FHIR base.

Whatever a FHIR server answers, the fetch ends in a ``FetchResult``: an answer of an unexpected shape is a
failure of that query, never an exception for the hook call (and never a breaker stuck half-open). A
request the HTTP library refuses locally (a token that is not a valid header value, our own pool full)
says nothing about the server: it is neither retried nor counted by the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import httpx
import orjson

from fhir_mappings.models import bundle_next_link
from hooks.audit.records import FhirQuery
from hooks.data_access import FetchResult, fetch_progress
from hooks.settings import Settings, is_loopback_host

__all__ = [
    "CircuitBreaker",
    "HttpxFhirFetcher",
    "base_allowed",
    "normalise_base",
    "within_base",
]

log = logging.getLogger("calcinosis_cds.fhir")

Outcome = Literal[
    "ok", "timeout", "error", "rejected", "circuit-open", "not-allowed", "too-large", "bad-content-type", "deadline"
]
_FHIR_JSON = ("application/fhir+json", "application/json")
_DEFAULT_PORTS = {"https": 443, "http": 80}
# Below this much time left a request cannot usefully complete: answering with what we have is better.
_MIN_ATTEMPT_S = 0.02
# Requests in flight to one FHIR base at a time: a stalled server holds at most half of the pool
# (max_connections=100), so the other EHRs' queries still find connections.
_PER_BASE_IN_FLIGHT = 50


# --------------------------------------------------------------------------- allow-list (SSRF, brief §2.3)


def normalise_base(url: str) -> str | None:
    """``scheme://host:port/path`` with lower-case scheme and host, explicit port, no trailing slash.

    None for anything that cannot be a FHIR base: not http(s), user info, query, fragment, dot segments or
    encoded separators in the path (they would let a template token walk out of the base).

    Dot segments count with path parameters too: Tomcat, Jetty and Spring strip ``;...`` from a segment
    before resolving it, so ``/fhir/..;/admin`` (or ``%2e%2e;``) reaches ``/admin`` there. ``%25`` is refused
    outright: a server or proxy that decodes twice turns ``%252e%252e`` into ``..`` after our check.
    """
    try:
        stripped = url.strip()
        # Any "@" in the authority, even with an empty user ("https://@host"): parsers disagree about it.
        if "@" in urlsplit(stripped).netloc:
            return None
        parsed = httpx.URL(stripped)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host or parsed.userinfo or parsed.query or parsed.fragment:
        return None
    raw_path = parsed.raw_path.decode("ascii", "replace")
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%25" in lowered or "\\" in raw_path:
        return None
    segments = [s for s in unquote(raw_path).split("/") if s]
    if any(s.split(";", 1)[0] in {".", ".."} for s in segments):
        return None
    port = parsed.port or _DEFAULT_PORTS[scheme]
    host = parsed.host.lower()
    if ":" in host:
        host = f"[{host}]"
    path = "/" + "/".join(segments) if segments else ""
    return f"{scheme}://{host}:{port}{path}"


def within_base(url: str, base: str) -> bool:
    """True when ``url`` (a full URL, query allowed) lies at or under the normalised ``base``."""
    try:
        if "@" in urlsplit(url).netloc:
            return False
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    if parsed.fragment or parsed.userinfo:
        return False
    without_query = str(parsed.copy_with(query=None))
    normalised = normalise_base(without_query)
    if normalised is None:
        return False
    return normalised == base or normalised.startswith(base + "/")


def base_allowed(fhir_server: str, allowed_bases: tuple[str, ...], *, allow_loopback_http: bool) -> str | None:
    """The normalised ``fhirServer`` when it may be queried, else None (no request is made at all)."""
    normalised = normalise_base(fhir_server)
    if normalised is None:
        return None
    if normalised.startswith("http://"):
        host = httpx.URL(normalised).host
        if not (allow_loopback_http and is_loopback_host(host)):
            return None
    for allowed in allowed_bases:
        candidate = normalise_base(allowed)
        if candidate and (normalised == candidate or normalised.startswith(candidate + "/")):
            return normalised
    return None


# --------------------------------------------------------------------------- circuit breaker (brief §4.2)


@dataclass(slots=True)
class _BreakerState:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


@dataclass(slots=True)
class CircuitBreaker:
    """Per FHIR base: open after ``threshold`` consecutive failures, one half-open probe after ``reset_s``.

    A failure is a timeout, a transport error or a 5xx: the server is unavailable. A 4xx, a bad body or a
    rejected token say nothing about availability and count as a success for the breaker. A request refused
    on our side (invalid header value, our own pool or per-base slots full) never reached the server and is
    not counted at all.
    """

    threshold: int
    reset_s: float
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _BreakerState] = field(default_factory=dict)

    def allow(self, base: str) -> bool:
        state = self._states.setdefault(base, _BreakerState())
        if state.opened_at is None:
            return True
        if state.probing or self.clock() - state.opened_at < self.reset_s:
            return False
        # Half-open: exactly one request finds out whether the server is back.
        state.probing = True
        return True

    def record(self, base: str, *, failed: bool) -> None:
        state = self._states.setdefault(base, _BreakerState())
        if not failed:
            self._states[base] = _BreakerState()
            return
        state.failures += 1
        if state.probing or state.failures >= self.threshold:
            if state.opened_at is None or state.probing:
                log.warning("FHIR circuit breaker for %s opened after %d consecutive failures", base, state.failures)
            state.opened_at = self.clock()
        state.probing = False

    def release_probe(self, base: str) -> None:
        """A probe that ended without a verdict (our own deadline) lets the next request probe instead."""
        state = self._states.get(base)
        if state is not None:
            state.probing = False

    def counts(self) -> dict[str, int]:
        """How many FHIR bases are in each state (the ``cds_fhir_breakers`` gauge)."""
        counts = {"closed": 0, "open": 0, "half-open": 0}
        for base in list(self._states):
            counts[self.state(base)] += 1
        return counts

    def state(self, base: str) -> Literal["closed", "open", "half-open"]:
        current = self._states.get(base)
        if current is None or current.opened_at is None:
            return "closed"
        if current.probing or self.clock() - current.opened_at >= self.reset_s:
            return "half-open"
        return "open"


# --------------------------------------------------------------------------- one GET


class _Failure(Exception):
    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        status: int | None = None,
        *,
        unavailable: bool = False,
        local: bool = False,
    ) -> None:
        super().__init__(reason)
        self.outcome: Outcome = outcome
        self.reason = reason
        self.status = status
        # Counts towards the breaker and may be retried once.
        self.unavailable = unavailable
        # Refused on our side before anything reached the server: no verdict on it, no token sent, no retry.
        self.local = local


@dataclass(slots=True)
class _Page:
    resources: list[dict[str, Any]]
    next_url: str | None
    status: int


def _resource_type(relative: str) -> str:
    return relative.split("?", 1)[0].split("/", 1)[0] or "?"


def _relative(url: str, base: str) -> str:
    """What the audit records: the query relative to the base (search parameters, never the token)."""
    parsed = httpx.URL(url)
    path = parsed.raw_path.decode("ascii", "replace")
    prefix = httpx.URL(base).raw_path.decode("ascii", "replace").rstrip("/")
    return path[len(prefix) :].lstrip("/") if path.startswith(prefix) else path


def _with_count(relative: str, count: int) -> str:
    """A search without ``_count`` gets one: the result set is the same (R45), the page count smaller."""
    if count <= 0 or _is_read(relative):
        return relative
    # Parameter names, not a substring: "x_count=5" or a value holding "_count=" is not a page size.
    if any(name == "_count" for name, _ in parse_qsl(relative.partition("?")[2], keep_blank_values=True)):
        return relative
    return f"{relative}{'&' if '?' in relative else '?'}_count={count}"


def _join(fhir_server: str, link: str) -> str | None:
    """A ``next`` link resolved against the base; None when it is not even a URL (e.g. "http://[::1")."""
    try:
        return urljoin(fhir_server.rstrip("/") + "/", link)
    except ValueError:
        return None


def _is_read(relative: str) -> bool:
    path = relative.split("?", 1)[0].strip("/")
    return "?" not in relative and path.count("/") == 1


def _validate(document: Any, relative: str, status: int) -> _Page:
    """The body must be what the query asks for: the resource for a read, a searchset Bundle for a search."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise _Failure("error", "the FHIR server answered something that is not a FHIR resource", status)
    kind = document["resourceType"]
    if kind == "OperationOutcome":
        raise _Failure("error", "the FHIR server answered with an OperationOutcome", status)
    if _is_read(relative):
        if kind != _resource_type(relative):
            raise _Failure("error", f"the FHIR server answered a {kind} to a {_resource_type(relative)} read", status)
        return _Page([document], None, status)
    if kind != "Bundle" or document.get("type") != "searchset":
        raise _Failure("error", "the FHIR server did not answer a search with a searchset Bundle", status)
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise _Failure("error", "Bundle.entry is not an array", status)
    resources: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        if resource["resourceType"] == "OperationOutcome":
            # search.mode=outcome: a warning or an error about the search itself. One that cannot be read
            # could be an error, so it fails the query rather than being skipped.
            if any(severity in {"error", "fatal"} for severity in _severities(resource, status)):
                raise _Failure("error", "the searchset Bundle carries an error OperationOutcome", status)
            continue
        resources.append(resource)
    return _Page(resources, bundle_next_link(document), status)


def _severities(outcome: dict[str, Any], status: int) -> list[str]:
    issues = outcome.get("issue")
    if issues is None:
        return []
    if not isinstance(issues, list) or not all(
        isinstance(issue, dict) and isinstance(issue.get("severity"), str) for issue in issues
    ):
        raise _Failure("error", "the searchset Bundle carries a malformed OperationOutcome", status)
    return [issue["severity"] for issue in issues]


class HttpxFhirFetcher:
    """The process's one FHIR client (a pooled ``httpx.AsyncClient``); implements ``FhirFetcher``."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        per_base_in_flight: int = _PER_BASE_IN_FLIGHT,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.breaker = CircuitBreaker(settings.fhir_breaker_failures, settings.fhir_breaker_reset_s, clock)
        self.per_base_in_flight = per_base_in_flight
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.client = client or httpx.AsyncClient(
            # Redirects are refused (SSRF): a 3xx is a failure, never followed.
            follow_redirects=False,
            timeout=httpx.Timeout(settings.fhir_request_timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
            headers={"Accept": "application/fhir+json", "Accept-Encoding": "identity", "User-Agent": "calcinosis-cds"},
            # Proxies from the environment would see the token; the EHR's base is reached directly.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

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
        relative = _with_count(query.lstrip("/"), self.settings.fhir_search_count)
        if base is None:
            return self._refused(key, relative, "fhirServer is not an allowed FHIR base")
        # Built from fhirServer as sent (not the normalised form) so the Host header is the EHR's own.
        url = fhir_server.rstrip("/") + "/" + relative
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
        url = _join(fhir_server, next_url)
        if url is None or not within_base(url, base):
            return self._refused(key, "(next page)", "the next link leaves the fhirServer base")
        return await self._pages(key, fhir_server, base, url, access_token, deadline, first_is_ehr_page=True)

    # -- internals -------------------------------------------------------------------------------------

    def _allowed(self, fhir_server: str, allowed_bases: tuple[str, ...]) -> str | None:
        return base_allowed(fhir_server, allowed_bases, allow_loopback_http=self.settings.fhir_allow_loopback_http)

    @staticmethod
    def _refused(key: str, relative: str, reason: str) -> FetchResult:
        # Nothing was sent anywhere, so the token was not used.
        query = FhirQuery(key, _resource_type(relative), relative, None, 0, 0.0, "not-allowed")
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
            relative = _relative(current, base)
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
                candidate = _join(fhir_server, attempt.page.next_url)
                if candidate is None or not within_base(candidate, base):
                    return FetchResult(
                        None, queries, failure="the next link leaves the fhirServer base", token_sent=sent
                    )
                current = candidate
        return FetchResult(resources, queries, token_sent=sent)

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
        kind = _resource_type(relative)
        if remaining <= _MIN_ATTEMPT_S:
            query = FhirQuery(key, kind, relative, None, 0, 0.0, "deadline")
            return _Attempt(None, [query], "the FHIR deadline passed before the query could be sent")
        probe = self.breaker.state(base) == "half-open"
        if not self.breaker.allow(base):
            query = FhirQuery(key, kind, relative, None, 0, 0.0, "circuit-open")
            return _Attempt(None, [query], "the FHIR server is failing (circuit breaker open)")
        progress = fetch_progress()
        if progress is not None:
            # Kept if the caller's own deadline cuts this request: it may already have reached the server.
            progress.in_flight = FhirQuery(key, kind, relative, None, 0, 0.0, "deadline")
            progress.in_flight_token = bool(token)
        try:
            attempt = await self._attempt(key, base, url, relative, token, deadline, started, probe=probe)
        finally:
            if probe:
                # Whatever happened (even an exception or a cancellation), the probe ends here. After a
                # verdict (record) this changes nothing; without one, the next request probes instead of
                # the server staying cut off until restart.
                self.breaker.release_probe(base)
        if progress is not None:
            progress.in_flight = None
            progress.queries.extend(attempt.queries)
            progress.token_sent = progress.token_sent or attempt.token_sent
        return attempt

    async def _attempt(
        self,
        key: str,
        base: str,
        url: str,
        relative: str,
        token: str | None,
        deadline: float,
        started: float,
        *,
        probe: bool,
    ) -> _Attempt:
        kind = _resource_type(relative)
        budget = min(self.settings.fhir_request_timeout_s, deadline - started)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._slot(base, budget):
                # Time spent waiting for a slot is not the server's: the request gets what is left.
                budget = min(self.settings.fhir_request_timeout_s, deadline - self.clock())
                async with asyncio.timeout(max(budget, 0.0)):
                    page = await self._request(url, relative, headers, budget)
        except _Failure as failure:
            if not failure.local:
                self.breaker.record(base, failed=failure.unavailable)
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
                self.breaker.record(base, failed=True)
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
            self.breaker.record(base, failed=False)
            ms = round((self.clock() - started) * 1000, 3)
            query = FhirQuery(key, kind, relative, None, 0, ms, "error")
            log.warning("FHIR %s query for key %s: unreadable answer (%s)", kind, key, type(exc).__name__)
            return _Attempt(
                None, [query], f"the FHIR server answered something unreadable ({type(exc).__name__})",
                token_sent=bool(token),
            )
        self.breaker.record(base, failed=False)
        ms = round((self.clock() - started) * 1000, 3)
        query = FhirQuery(key, kind, relative, page.status, len(page.resources), ms, "ok")
        log.debug("FHIR %s query for key %s: %d resources in %.0f ms", kind, key, len(page.resources), ms)
        return _Attempt(page, [query], None, token_sent=bool(token))

    @contextlib.asynccontextmanager
    async def _slot(self, base: str, wait_s: float) -> AsyncIterator[None]:
        """One of the base's in-flight slots; a wait that outlasts ``wait_s`` is our own limit, not the server's."""
        slots = self._slots.setdefault(base, asyncio.Semaphore(self.per_base_in_flight))
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await slots.acquire()
        except TimeoutError:
            raise _Failure("error", "too many queries already in flight to this FHIR server", local=True) from None
        try:
            yield
        finally:
            slots.release()

    async def _request(self, url: str, relative: str, headers: dict[str, str], budget: float) -> _Page:
        limit = self.settings.fhir_max_response_bytes
        try:
            async with self.client.stream("GET", url, headers=headers, timeout=budget) as response:
                status = response.status_code
                if status in (401, 403):
                    raise _Failure("rejected", f"the FHIR server refused the request ({status})", status)
                if 300 <= status < 400:
                    raise _Failure("error", f"the FHIR server redirected ({status}), not followed", status)
                if status >= 500:
                    raise _Failure("error", f"the FHIR server failed ({status})", status, unavailable=True)
                if status != 200:
                    raise _Failure("error", f"the FHIR server answered {status}", status)
                media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if media not in _FHIR_JSON:
                    raise _Failure("bad-content-type", "the FHIR server answered a non-JSON content type", status)
                # identity is asked for; a compressed body would be inflated before the size cap could count
                # it (a few kB of gzip can be gigabytes), so it is not read at all.
                encoding = response.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):
                    raise _Failure("error", "compressed response refused", status)
                declared = response.headers.get("content-length", "")
                # isdigit() also accepts "²", which int() then refuses.
                if declared.isascii() and declared.isdecimal() and int(declared) > limit:
                    raise _Failure("too-large", f"the FHIR response is over {limit} bytes", status)
                body = bytearray()
                # Raw bytes are counted: with identity they are exactly what gets parsed.
                async for chunk in response.aiter_raw():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise _Failure("too-large", f"the FHIR response is over {limit} bytes", status)
        except httpx.PoolTimeout:
            # Our own pool is full: nothing was sent, and the server may be perfectly healthy.
            raise _Failure("error", "no free connection in the local pool", local=True) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeEncodeError) as exc:
            # The HTTP library refused to send this request (e.g. CR/LF or non-ASCII in the token): a fault of
            # this call's input, so one caller cannot open the breaker for everyone. Class name only: the
            # exception can hold the header value, that is the token.
            raise _Failure("error", f"the request could not be sent ({type(exc).__name__})", local=True) from None
        except httpx.HTTPError as exc:
            # Transport failures say nothing secret; their text could hold the URL, so only the class is kept.
            raise _Failure("error", f"transport error ({type(exc).__name__})", unavailable=True) from None
        try:
            document = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise _Failure("error", "the FHIR server answered invalid JSON", status) from None
        try:
            return _validate(document, relative, status)
        except _Failure:
            raise
        except Exception as exc:
            # A shape _validate did not foresee: a bad response (the server did answer), never a 500.
            raise _Failure("error", f"the FHIR server answered an unreadable resource ({type(exc).__name__})",
                           status) from None


@dataclass(slots=True)
class _Attempt:
    page: _Page | None
    queries: list[FhirQuery]
    failure: str | None
    rejected: bool = False
    retryable: bool = False
    token_sent: bool = False

