"""Getting the data a service needs: prefetch first, then the EHR's FHIR server.

Implements the prefetch decision table of the protocol brief §1.4 (CDS Hooks 2.0 #prefetch-template,
#prefetch-tokens, #fhir-resource-access):

=====================  ================================================================
``prefetch[key]``       what the service does
=====================  ================================================================
resource / Bundle       use it; a Bundle ``next`` link is followed through ``fhirServer``
``null``                the EHR has no data: empty, never re-queried
OperationOutcome        the EHR's own query failed: query ``fhirServer`` with the template
key (or prefetch) absent query ``fhirServer`` with the template, tokens filled from context
=====================  ================================================================

Data the assessment cannot do without ("essential" keys) that stays unobtainable gives 412.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hooks.audit.records import FhirQuery, PrefetchStateName, TokenUse
from hooks.errors import BadRequest

__all__ = [
    "FetchResult",
    "FhirFetcher",
    "KeyData",
    "ResolvedData",
    "classify_prefetch_value",
    "fill_template",
]

_TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def fill_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Replace 2.0 prefetch tokens; None when a token cannot be filled (the key is then unobtainable).

    Only ``{{context.<root primitive>}}`` and the four user tokens exist in CDS Hooks 2.0 (#prefetch-tokens).
    """
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(1)
        if token.startswith("context."):
            value = context.get(token.removeprefix("context."))
        elif token in _USER_TOKENS:
            user = str(context.get("userId", ""))
            kind, _, ident = user.partition("/")
            value = ident if kind == _USER_TOKENS[token] else None
        else:
            value = None
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            missing = True
            return ""
        return str(value)

    filled = _TOKEN.sub(substitute, template)
    return None if missing else filled


@dataclass(frozen=True, slots=True)
class ClassifiedValue:
    state: PrefetchStateName
    resources: tuple[dict[str, Any], ...] = ()
    next_link: str | None = None


def classify_prefetch_value(value: Any) -> ClassifiedValue:
    """What the EHR sent for one key: a resource, a searchset Bundle, ``null``, or an OperationOutcome."""
    if value is None:
        return ClassifiedValue("null")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest("a prefetch value must be a FHIR resource, a Bundle or null")
    if value["resourceType"] == "OperationOutcome":
        return ClassifiedValue("operation-outcome")
    if value["resourceType"] != "Bundle":
        return ClassifiedValue("present", (value,))
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array")
    resources: list[dict[str, Any]] = []
    outcome_only = bool(entries)
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "OperationOutcome":
            continue
        outcome_only = False
        resources.append(resource)
    if outcome_only:
        # A Bundle that holds only OperationOutcome entries is the EHR reporting a failed search.
        return ClassifiedValue("operation-outcome")
    next_link = None
    for link in value.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            next_link = link["url"]
    return ClassifiedValue("present", tuple(resources), next_link)


@dataclass(slots=True)
class KeyData:
    key: str
    received: PrefetchStateName
    # None when the data could not be obtained at all (neither prefetch nor fhirServer).
    resources: list[dict[str, Any]] | None
    fetched: bool = False
    failure: str | None = None

    @property
    def obtained(self) -> bool:
        return self.resources is not None


@dataclass(slots=True)
class ResolvedData:
    keys: dict[str, KeyData] = field(default_factory=dict)
    queries: list[FhirQuery] = field(default_factory=list)
    token_use: TokenUse = "none"

    def resources(self, key: str) -> list[dict[str, Any]]:
        data = self.keys.get(key)
        return list(data.resources or ()) if data else []


@dataclass(slots=True)
class FetchResult:
    resources: list[dict[str, Any]] | None
    queries: list[FhirQuery]
    failure: str | None = None
    token_rejected: bool = False


class FhirFetcher(Protocol):
    """Queries the EHR's FHIR server for one prefetch key (implemented in ``hooks.fhir_client``)."""

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


KeyStateName = Literal["present", "null", "operation-outcome", "missing"]


async def resolve_prefetch(
    *,
    prefetch: Mapping[str, Any] | None,
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    fhir_server: str | None,
    access_token: str | None,
    fetcher: FhirFetcher | None,
    allowed_bases: tuple[str, ...],
    deadline: float,
) -> ResolvedData:
    """Resolve every declared prefetch key; missing keys are fetched concurrently before ``deadline``.

    Keys the EHR sent that the service did not declare are ignored (a client only sends what was asked).
    """
    import asyncio

    resolved = ResolvedData(token_use="not-used" if access_token else "none")
    received = prefetch or {}
    pending: dict[str, tuple[str, str | None]] = {}  # key -> (query or next url, kind)
    for key, template in templates.items():
        if key in received:
            classified = classify_prefetch_value(received[key])
            if classified.state == "null":
                resolved.keys[key] = KeyData(key, "null", [])
                continue
            if classified.state == "present":
                resolved.keys[key] = KeyData(key, "present", list(classified.resources))
                if classified.next_link:
                    pending[key] = (classified.next_link, "next")
                continue
            state: PrefetchStateName = "operation-outcome"
        else:
            state = "missing"
        resolved.keys[key] = KeyData(key, state, None)
        query = fill_template(template, context)
        if query is None:
            resolved.keys[key].failure = "template token could not be filled from context"
            continue
        pending[key] = (query, None)

    if not pending:
        return resolved
    if fetcher is None or not fhir_server:
        for key, (_, kind) in pending.items():
            if kind is None:
                resolved.keys[key].failure = "no fhirServer to query"
        return resolved

    async def run(key: str, target: str, kind: str | None) -> tuple[str, str | None, FetchResult]:
        if kind == "next":
            result = await fetcher.follow_next(
                key=key, fhir_server=fhir_server, next_url=target, access_token=access_token,
                deadline=deadline, allowed_bases=allowed_bases,
            )
        else:
            result = await fetcher.fetch(
                key=key, fhir_server=fhir_server, query=target, access_token=access_token,
                deadline=deadline, allowed_bases=allowed_bases,
            )
        return key, kind, result

    results = await asyncio.gather(*(run(k, t, kind) for k, (t, kind) in pending.items()))
    for key, kind, result in results:
        resolved.queries.extend(result.queries)
        data = resolved.keys[key]
        if access_token and result.queries:
            resolved.token_use = "used" if resolved.token_use != "rejected" else "rejected"
        if result.token_rejected:
            resolved.token_use = "rejected"
        if kind == "next":
            # The first page came from the EHR; further pages are best effort and flagged when missing.
            if result.resources is not None and data.resources is not None:
                data.resources.extend(result.resources)
                data.fetched = True
            else:
                data.failure = result.failure or "next page unobtainable"
            continue
        data.fetched = True
        data.resources = result.resources
        data.failure = result.failure
    return resolved
