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

Data the assessment cannot do without ("essential" keys) that stays unobtainable gives 412. A key whose
pages could not all be read (a ``next`` page failed, or the page cap was reached) counts as unobtainable:
a truncated Observation list would let the assessment claim a test was never done. Missing keys are
fetched concurrently and the whole fetch is bounded by the hook call's deadline (security brief §4.2).
One key's fetch failing (even by raising) fails that key only: the others run to their end inside a
``TaskGroup``, so no request outlives the call, and everything sent so far reaches the audit record, also
when the deadline cuts a fetch short (``FetchProgress``).
A ``fhirAuthorization.patient`` other than ``context.patientId`` makes the token unusable (security brief
§2.2 point 2): nothing is queried with it, and essential data that only it could fetch gives 412.

Data about another patient is an error, never filtered out in silence (issue 16 item 6): a resource whose
``subject`` (or ``patient``) does not resolve to ``context.patientId``, relative or absolute on the same
``fhirServer``, or a Patient that is not that patient, makes the call fail: 400 when the EHR prefetched it,
412 when ``fhirServer`` answered it, naming the key either way.

The records a resolution fills in and the ``FhirFetcher`` seam live in ``hooks.fetch_types`` (re-exported).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_mappings.prefetch import PrefetchValue, newest_first_reach
from fhir_mappings.prefetch import classify_prefetch_value as read_prefetch_value
from hooks.audit.records import PrefetchStateName
from hooks.errors import BadRequest, PreconditionFailed
from hooks.fetch_types import (
    BUDGET,
    PROGRESS,
    ByteBudget,
    FetchProgress,
    FetchResult,
    FhirFetcher,
    KeyData,
    ResolvedData,
    call_byte_budget,
    fetch_progress,
)
from hooks.fhir.allowlist import normalise_base
from hooks.models import is_fhir_id

__all__ = [
    "ByteBudget",
    "FetchProgress",
    "FetchResult",
    "FhirFetcher",
    "KeyData",
    "ResolvedData",
    "call_byte_budget",
    "classify_prefetch_value",
    "completeness_reason",
    "fetch_progress",
    "fill_template",
    "not_about_patient",
    "resolve_prefetch",
    "scope_allows_read",
]

log = logging.getLogger("calcinosis_cds.fhir")

# The fetcher enforces the deadline itself; this margin only catches a fetcher that does not.
_DEADLINE_GRACE_S = 0.1
_TOKEN_EXPIRY_MARGIN_S = 2.0

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
    Every value filled in must be a FHIR id (not ``.`` or ``..``): it becomes part of a URL path or search,
    so anything else could turn a read into a search of all patients or add search parameters.
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
        if not isinstance(value, str | int) or isinstance(value, bool) or not is_fhir_id(str(value)):
            missing = True
            return ""
        return str(value)

    filled = _TOKEN.sub(substitute, template)
    return None if missing else filled


_VERSIONED = re.compile(r"^Patient/([^/]+)(/_history/[^/]+)?$")


def not_about_patient(resource: Mapping[str, Any], patient_id: str, fhir_server: str | None) -> str | None:
    """Why ``resource`` is not about ``patient_id`` (None when it is, or when it names no patient at all).

    A ``subject``/``patient`` that is present must be a reference to ``Patient/<patient_id>``: relative
    (optionally versioned) or absolute under ``fhir_server``. A bare identifier, a display, a contained or
    ``urn:uuid`` reference, another id, or the same id on another server do not resolve to the patient.
    A resource without either element carries no patient of its own (the query was scoped to the patient).
    """
    kind = str(resource.get("resourceType"))
    if kind == "Patient":
        return None if resource.get("id") == patient_id else "a Patient that is not context.patientId"
    subject = resource.get("subject") if "subject" in resource else resource.get("patient")
    if subject is None:
        return None
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str):
        return f"a {kind} whose subject is not a reference to context.patientId"
    relative = reference
    if "://" in reference:
        prefix, _, tail = reference.rpartition("/Patient/")
        server = normalise_base(fhir_server) if fhir_server else None
        if not tail or server is None or normalise_base(prefix) != server:
            return f"a {kind} whose subject is on another server than fhirServer, not context.patientId"
        relative = "Patient/" + tail
    match = _VERSIONED.match(relative)
    if match is None or match.group(1) != patient_id:
        return f"a {kind} about another patient than context.patientId"
    return None


def _first_foreign(
    resources: list[dict[str, Any]], patient_id: str, fhir_server: str | None
) -> str | None:
    for resource in resources:
        reason = not_about_patient(resource, patient_id, fhir_server)
        if reason is not None:
            return reason
    return None


def classify_prefetch_value(value: Any) -> PrefetchValue:
    """What the EHR sent for one key: a resource, a searchset Bundle, ``null``, or an OperationOutcome.

    The reading itself lives in the mapping layer; the protocol rule added here is that anything else
    (a string, a number, an object without ``resourceType``) is a malformed request, answered 400.
    """
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("resourceType"), str)):
        raise BadRequest("a prefetch value must be a FHIR resource, a Bundle or null")
    entries = value.get("entry", []) if isinstance(value, dict) and value.get("resourceType") == "Bundle" else []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array")
    return read_prefetch_value(value)



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
    authorized_patient: str | None = None,
    token_expires_in: float | None = None,
    token_scope: str | None = None,
    max_call_bytes: int | None = None,
    complete_after: Mapping[str, tuple[datetime, str]] | None = None,
) -> ResolvedData:
    """Resolve every declared prefetch key; missing keys are fetched concurrently before ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value. ``authorized_patient`` is ``fhirAuthorization.patient``;
    ``token_expires_in`` its ``expires_in``: no FHIR call is made once the token has (nearly) expired;
    ``token_scope`` its ``scope``: a key whose resource type the SMART scopes do not grant is not queried.
    ``max_call_bytes`` bounds the FHIR answer bytes all keys of this call may read together.
    ``complete_after``: per key, the oldest moment any rule reads (now minus the longest look-back) and the
    search parameter that dates the results. A newest-first list that reaches before it is complete: its
    remaining pages are not read. The service's own query asks for that window only (``date=ge…``), which
    is complete by construction. Either way the key records why (issue 11).
    Keys the EHR sent that the service did not declare are ignored (a client only sends what was asked).
    """
    resolved = ResolvedData(token_use="not-used" if access_token else "none")
    received = prefetch or {}
    patient_id = str(context.get("patientId", ""))
    # key -> (target, mode): "query" the template, follow the EHR's "next" link, or query the look-back window
    # and "merge" it with the EHR's first page.
    pending: dict[str, tuple[str, str]] = {}
    for key, template in templates.items():
        if key in received:
            classified = classify_prefetch_value(received[key])
            if classified.kind == "null":
                resolved.keys[key] = KeyData(key, "null", [])
                continue
            if classified.kind == "present":
                foreign = _first_foreign(list(classified.resources), patient_id, fhir_server)
                if foreign is not None:
                    raise BadRequest(f"prefetch key '{key}' holds {foreign}", expression=[f"prefetch.{key}"],
                                     failure="wrong-patient")
                resolved.keys[key] = KeyData(key, "present", list(classified.resources))
                if classified.next_link:
                    window = (complete_after or {}).get(key)
                    reason = _reaches_back(classified.resources, window[0] if window else None)
                    own = fill_template(template, context) if window and reason is None else None
                    if reason is not None:
                        resolved.keys[key].complete_by = reason
                    elif window and own is not None:
                        # The EHR's first page stops inside the look-back: ask for the window itself (one or two
                        # pages) and add what the page lacked, rather than walk every page of ten years.
                        pending[key] = (_windowed(own, *window), "merge")
                        resolved.keys[key].complete_by = _window_reason(*window)
                    else:
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
        if complete_after and key in complete_after:
            query = _windowed(query, *complete_after[key])
            resolved.keys[key].complete_by = _window_reason(*complete_after[key])
        pending[key] = (query, "query")

    if not pending:
        return resolved
    if access_token and token_expires_in is not None:
        # Security brief §2.2 point 3: never call FHIR after the token expires (minus a safety margin).
        deadline = min(deadline, time.monotonic() + token_expires_in - _TOKEN_EXPIRY_MARGIN_S)
    unusable = _why_not_query(fhir_server, fetcher, access_token, authorized_patient, context)
    if unusable is None and deadline <= time.monotonic():
        unusable = "the access token expires before the FHIR server could be queried"
    if unusable is None and access_token and token_scope is not None:
        for key, (target, mode) in list(pending.items()):
            resource_type = _resource_type(target) if mode != "next" else None
            if resource_type and scope_allows_read(token_scope, resource_type) is False:
                _incomplete(resolved.keys[key], f"fhirAuthorization.scope does not grant {resource_type} read")
                del pending[key]
    if unusable is not None or fetcher is None or fhir_server is None:
        for key in pending:
            _incomplete(resolved.keys[key], unusable or "no fhirServer to query")
        return resolved

    budget = ByteBudget(max_call_bytes) if max_call_bytes is not None else None

    async def run(key: str, target: str, is_next: bool) -> FetchResult:
        # Each key's task has its own context: all of them share (and charge) the call's one budget.
        BUDGET.set(budget)
        arguments: dict[str, Any] = {
            "key": key, "fhir_server": fhir_server, "access_token": access_token,
            "deadline": deadline, "allowed_bases": allowed_bases,
        }
        progress = FetchProgress()
        PROGRESS.set(progress)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + _DEADLINE_GRACE_S):
                if is_next:
                    return await fetcher.follow_next(next_url=target, **arguments)
                return await fetcher.fetch(query=target, **arguments)
        except TimeoutError:
            return progress.cut("the FHIR deadline passed")
        except Exception as exc:
            # A fetcher should turn every answer into a FetchResult; one that raises fails its own key only.
            # The class alone is logged: the message could quote a URL or a header (the token).
            log.warning("FHIR fetch for key %s raised %s", key, type(exc).__name__)
            return progress.cut(f"the FHIR query failed ({type(exc).__name__})")

    # Every task ends before the TaskGroup exits (run() does not raise), and a cancelled hook call cancels
    # them all: no query keeps running, token in hand, after the call has been answered.
    async with asyncio.TaskGroup() as group:
        tasks = [(key, mode, group.create_task(run(key, target, mode == "next")))
                 for key, (target, mode) in pending.items()]
    for key, mode, task in tasks:
        result = task.result()
        resolved.queries.extend(result.queries)
        if result.token_sent and resolved.token_use == "not-used":
            resolved.token_use = "used"
        if result.token_rejected:
            resolved.token_use = "rejected"
        data = resolved.keys[key]
        if result.resources is None:
            _incomplete(data, result.failure or "the FHIR server gave no usable answer")
            continue
        foreign = _first_foreign(result.resources, patient_id, fhir_server)
        if foreign is not None:
            _incomplete(data, f"fhirServer answered {foreign}")
            if resolved.refusal is None:
                resolved.refusal = PreconditionFailed(
                    f"CDS Hooks prefetch key '{key}': fhirServer answered {foreign}", expression=[f"prefetch.{key}"],
                    failure="wrong-patient",
                )
            continue
        data.fetched = True
        if mode == "next" and data.resources is not None:
            data.resources.extend(result.resources)
        elif mode == "merge" and data.resources is not None:
            seen = {(r.get("resourceType"), r.get("id")) for r in data.resources}
            data.resources.extend(r for r in result.resources if (r.get("resourceType"), r.get("id")) not in seen)
        else:
            data.resources = list(result.resources)
            data.failure = None
    return resolved


def _windowed(query: str, since: datetime, param: str) -> str:
    return f"{query}{'&' if '?' in query else '?'}{param}=ge{since.date().isoformat()}"


def _window_reason(since: datetime, param: str) -> str:
    return f"query limited to {param} >= {since.date().isoformat()} (the longest look-back)"


def _reaches_back(resources: list[dict[str, Any]] | tuple[dict[str, Any], ...], needed: datetime | None) -> str | None:
    oldest = newest_first_reach(resources, needed) if needed is not None else None
    return None if oldest is None else completeness_reason(oldest, needed)


def completeness_reason(oldest: datetime, needed: datetime | None) -> str:
    """The audit's words for a list accepted before its last page (issue 11 completeness rule)."""
    before = f", before {needed.date().isoformat()}" if needed else ""
    reach = oldest.date().isoformat()
    return f"newest-first list reaches {reach}{before} (the longest look-back): later pages not read"


def _why_not_query(
    fhir_server: str | None,
    fetcher: FhirFetcher | None,
    access_token: str | None,
    authorized_patient: str | None,
    context: Mapping[str, Any],
) -> str | None:
    if not fhir_server:
        return "no fhirServer to query"
    if fetcher is None:
        return "FHIR queries are not configured"
    if access_token and authorized_patient and authorized_patient != context.get("patientId"):
        return "fhirAuthorization.patient does not match context.patientId, so the access token was not used"
    return None


_SMART_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)$")


def scope_allows_read(scope: str, resource_type: str) -> bool | None:
    """Whether SMART scopes (v1 ``.read``/``.*``, v2 ``.rs``) grant reading ``resource_type``.

    None when the string holds no SMART scope at all (vendor formats such as Epic's
    ``Observation.Read (R4)``): then the service tries and handles a 403 (security brief §2.2 point 4).
    """
    granted = [m.groups() for token in scope.split() if (m := _SMART_SCOPE.match(token.split("?", 1)[0]))]
    if not granted:
        return None
    return any(
        rtype in {"*", resource_type} and (permission in {"*", "read"} or "r" in permission.replace("read", ""))
        for _, rtype, permission in granted
        if permission != "write"
    )


def _resource_type(query: str) -> str | None:
    head = query.lstrip("/").split("?", 1)[0].split("/", 1)[0]
    return head if head[:1].isupper() else None


def _incomplete(data: KeyData, reason: str) -> None:
    """A key the service could not read in full is unobtainable (a partial list is not used)."""
    if data.received == "present":
        reason = f"further pages could not be read: {reason}"
    data.resources = None
    data.failure = reason
    data.complete_by = None
