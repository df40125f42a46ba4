"""CDS Hooks prefetch values: a resource, a searchset Bundle, ``null`` or an OperationOutcome.

:func:`classify_prefetch_value` tells them apart (an OperationOutcome alone or as Bundle entries; a searchset
holding only warnings is an empty result, issue 11), keeps the Bundle ``next`` link for the FHIR fallback
layer, and reports malformed entries as :class:`DataIssue` instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal, Required

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

# pydantic needs typing_extensions.TypedDict before Python 3.12.
from typing_extensions import TypedDict

from fhir_mappings._common import parse_datetime
from fhir_mappings.facts import DataIssue
from fhir_mappings.models import CodeableConcept, malformed_issue

__all__ = [
    "Bundle",
    "BundleEntry",
    "BundleLink",
    "OperationOutcome",
    "PrefetchValue",
    "bundle_next_link",
    "classify_prefetch_value",
    "newest_first_reach",
]

_IGNORE_EXTRA = ConfigDict(extra="ignore")


@with_config(_IGNORE_EXTRA)
class OutcomeIssue(TypedDict, total=False):
    severity: str
    code: str
    diagnostics: str
    details: CodeableConcept


@with_config(_IGNORE_EXTRA)
class OperationOutcome(TypedDict, total=False):
    resourceType: Required[Literal["OperationOutcome"]]
    id: str
    issue: list[OutcomeIssue]


@with_config(_IGNORE_EXTRA)
class EntrySearch(TypedDict, total=False):
    mode: str


@with_config(_IGNORE_EXTRA)
class BundleEntry(TypedDict, total=False):
    fullUrl: str
    # Passed through unvalidated (validating here would copy every resource): build_facts validates
    # the resources it reads, and classify_prefetch_value checks each one is a resource dict.
    resource: Any
    search: EntrySearch


@with_config(_IGNORE_EXTRA)
class BundleLink(TypedDict):
    relation: str
    url: str


@with_config(_IGNORE_EXTRA)
class Bundle(TypedDict, total=False):
    resourceType: Required[Literal["Bundle"]]
    id: str
    type: str
    total: int
    link: list[BundleLink]
    entry: list[BundleEntry]


_ENTRY = TypeAdapter(BundleEntry)
_ENTRIES = TypeAdapter(list[BundleEntry])
_OUTCOME = TypeAdapter(OperationOutcome)


@dataclass(frozen=True, slots=True)
class PrefetchValue:
    """What one prefetch key held."""

    kind: Literal["present", "null", "operation-outcome"]
    # Raw resource dicts (Bundle entries unwrapped), in the order sent; OperationOutcomes are not in here.
    resources: tuple[dict[str, Any], ...] = ()
    outcomes: tuple[OperationOutcome, ...] = ()
    # The searchset's "next" page, which the FHIR fallback layer follows.
    next_link: str | None = None
    issues: tuple[DataIssue, ...] = ()


def _outcome(resource: Mapping[str, Any]) -> OperationOutcome | DataIssue:
    try:
        return _OUTCOME.validate_python(resource)
    except ValidationError as exc:
        return malformed_issue(f"OperationOutcome skipped: {exc.error_count()} invalid field(s)", resource)


def _entries(bundle: Mapping[str, Any]) -> tuple[list[BundleEntry], list[DataIssue]]:
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        return [], [malformed_issue("Bundle.entry is not a list; no entry read", bundle)]
    try:
        # One validation call for the whole list is the common, fast path.
        return _ENTRIES.validate_python(raw_entries), []
    except ValidationError:
        pass
    entries: list[BundleEntry] = []
    issues: list[DataIssue] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_ENTRY.validate_python(raw))
        except ValidationError as exc:
            detail = f"Bundle.entry[{index}] skipped: {exc.error_count()} invalid field(s)"
            issues.append(malformed_issue(detail, bundle))
    return entries, issues


def bundle_next_link(bundle: Mapping[str, Any]) -> str | None:
    """The ``link[relation=next].url`` of a searchset Bundle, if any; malformed links are skipped."""
    links = bundle.get("link") or ()
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def classify_prefetch_value(value: object) -> PrefetchValue:
    """Tell a present resource/Bundle, a ``null`` and an OperationOutcome apart; never raises."""
    if value is None:
        return PrefetchValue("null")
    if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
        issue = malformed_issue("prefetch value is not a FHIR resource; treated as absent")
        return PrefetchValue("null", issues=(issue,))
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        outcome = _outcome(value)
        if isinstance(outcome, DataIssue):
            return PrefetchValue("operation-outcome", issues=(outcome,))
        return PrefetchValue("operation-outcome", outcomes=(outcome,))
    if rtype != "Bundle":
        return PrefetchValue("present", resources=(dict(value),))
    entries, issues = _entries(value)
    resources: list[dict[str, Any]] = []
    outcomes: list[OperationOutcome] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if resource is None:
            continue
        entry_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(entry_type, str):
            issues.append(malformed_issue(f"Bundle.entry[{index}].resource is not a FHIR resource; skipped", value))
        elif entry_type == "OperationOutcome":
            outcome = _outcome(resource)
            if isinstance(outcome, DataIssue):
                issues.append(outcome)
            else:
                outcomes.append(outcome)
        else:
            resources.append(resource)
    # A searchset that holds only warnings (Epic's "no results" Bundle: one 4101 warning) is an empty result,
    # not a failed query; an error or fatal issue (or an issue without severity) is a failure (issue 11).
    failed = outcomes and not resources and not all(_only_warnings(outcome) for outcome in outcomes)
    kind: Literal["present", "operation-outcome"] = "operation-outcome" if failed else "present"
    return PrefetchValue(kind, tuple(resources), tuple(outcomes), bundle_next_link(value), tuple(issues))


def _only_warnings(outcome: OperationOutcome) -> bool:
    issues = outcome.get("issue") or []
    return bool(issues) and all(issue.get("severity") in {"warning", "information"} for issue in issues)


def _dated(resource: Mapping[str, Any]) -> datetime | None:
    """When an Observation (or a report) was taken: effective[x], else ``issued``; None when undated."""
    if not isinstance(resource, Mapping):
        return None
    for name in ("effectiveDateTime", "effectiveInstant", "issued"):
        value = resource.get(name)
        if isinstance(value, str) and (moment := parse_datetime(value)) is not None:
            return moment
    period = resource.get("effectivePeriod")
    if isinstance(period, Mapping):
        for name in ("start", "end"):
            value = period.get(name)
            if isinstance(value, str) and (moment := parse_datetime(value)) is not None:
                return moment
    return None


def newest_first_reach(resources: Sequence[Mapping[str, Any]], needed_from: datetime) -> datetime | None:
    """The oldest date of a newest-first list once it reaches back before ``needed_from``, else None.

    The completeness rule of issue 11: a list the server sorted newest first (``_sort=-date``) that already
    holds a result older than the longest look-back window holds every result the rules read, so further
    pages are not needed. The order is checked, not trusted: a server that ignored ``_sort`` gives a list
    whose dates go up somewhere, and then every page is read. Undated entries are ignored (never "latest").
    """
    dates = [moment for r in resources if (moment := _dated(r)) is not None]
    if not dates or any(later > earlier for earlier, later in pairwise(dates)):
        return None
    return dates[-1] if dates[-1] < needed_from else None
