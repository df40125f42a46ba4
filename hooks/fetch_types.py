"""The data a hook call resolves, and the seam to the EHR's FHIR server (``FhirFetcher``).

Split out of ``hooks.data_access`` (which re-exports these names): the records a fetch fills in, the
task-local progress and byte budget a fetcher reports to, and the Protocol ``hooks.fhir.client`` implements.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from hooks.audit.records import FhirQuery, PrefetchStateName, TokenUse
from hooks.errors import CdsError

__all__ = [
    "BUDGET",
    "PROGRESS",
    "ByteBudget",
    "FetchProgress",
    "FetchResult",
    "FhirFetcher",
    "KeyData",
    "ResolvedData",
    "call_byte_budget",
    "fetch_progress",
]


@dataclass(slots=True)
class KeyData:
    key: str
    received: PrefetchStateName
    # None when the data could not be obtained at all (neither prefetch nor fhirServer).
    resources: list[dict[str, Any]] | None
    fetched: bool = False
    failure: str | None = None
    # Why the list is complete although pages were left unread (issue 11 completeness rule), for the audit.
    complete_by: str | None = None

    @property
    def obtained(self) -> bool:
        return self.resources is not None


@dataclass(slots=True)
class ResolvedData:
    keys: dict[str, KeyData] = field(default_factory=dict)
    queries: list[FhirQuery] = field(default_factory=list)
    token_use: TokenUse = "none"
    # Set when fhirServer answered data about another patient: the call must fail with it once audited.
    refusal: CdsError | None = None

    def resources(self, key: str) -> list[dict[str, Any]]:
        data = self.keys.get(key)
        return list(data.resources or ()) if data else []


@dataclass(slots=True)
class FetchResult:
    resources: list[dict[str, Any]] | None
    queries: list[FhirQuery]
    failure: str | None = None
    # The FHIR server answered 401/403 to the access token: it is never sent again in this call.
    token_rejected: bool = False
    # The access token went out in at least one request (audit ``token_use = used``).
    token_sent: bool = False


@dataclass(slots=True)
class FetchProgress:
    """What one key's fetch has done so far, reported by the fetcher as it goes.

    ``FetchResult`` only exists once a fetch returns; when the deadline cuts it short (or it raises), this is
    what the audit gets instead, so ``token_use`` never says "not-used" after a request went out.
    """

    queries: list[FhirQuery] = field(default_factory=list)
    token_sent: bool = False
    # A request handed to the HTTP client and not answered yet: it may have reached the server.
    in_flight: FhirQuery | None = None
    in_flight_token: bool = False

    def cut(self, failure: str) -> FetchResult:
        queries = [*self.queries, *([self.in_flight] if self.in_flight is not None else [])]
        token_sent = self.token_sent or (self.in_flight is not None and self.in_flight_token)
        return FetchResult(None, queries, failure=failure, token_sent=token_sent)


# Task-local (each key runs in its own task, with its own copy of the context), so the FhirFetcher
# protocol stays as it is and a fetcher that does not report simply leaves the record empty.
PROGRESS: ContextVar[FetchProgress | None] = ContextVar("calcinosis_fetch_progress", default=None)


def fetch_progress() -> FetchProgress | None:
    """The progress record of the key being fetched by the current task (None outside ``resolve_prefetch``)."""
    return PROGRESS.get()


@dataclass(slots=True)
class ByteBudget:
    """FHIR answer bytes one hook call may still read, shared by all its keys: a cap on memory per call.

    Parsed JSON takes several times its size in memory, so the bytes read bound what one call can hold.
    """

    total: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.used)

    def charge(self, size: int) -> None:
        self.used += size


BUDGET: ContextVar[ByteBudget | None] = ContextVar("calcinosis_call_byte_budget", default=None)


def call_byte_budget() -> ByteBudget | None:
    """The byte budget of the hook call the current task fetches for (None outside ``resolve_prefetch``)."""
    return BUDGET.get()


class FhirFetcher(Protocol):
    """Queries the EHR's FHIR server for one prefetch key (implemented in ``hooks.fhir.client``)."""

    async def fetch(
        self,
        *,
        key: str,
        fhir_server: str,
        query: str,
        access_token: str | None,
        deadline: float,
        allowed_bases: tuple[str, ...],
    ) -> FetchResult: ...

    async def follow_next(
        self,
        *,
        key: str,
        fhir_server: str,
        next_url: str,
        access_token: str | None,
        deadline: float,
        allowed_bases: tuple[str, ...],
    ) -> FetchResult: ...
