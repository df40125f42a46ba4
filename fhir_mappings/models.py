"""Narrow pydantic schemas of the FHIR R4 fields this service reads, and prefetch classification.

Each resource is a ``TypedDict`` validated by pydantic v2 (``extra="ignore"``): only the elements the mapping
layer uses are declared and kept. Typed dicts rather than ``BaseModel`` classes because validation is about
three times faster and the Observation path is the hot one (see ``docs/decisions.md``). This follows the
clinical brief §9.8 (FR Core: unknown extensions are ignored; ``birthDate`` and ``gender`` are all the rules
need from Patient).
A CDS Hooks prefetch value may be a resource, a searchset Bundle, ``null`` or an OperationOutcome (alone or as
Bundle entries); :func:`classify_prefetch_value` tells them apart, keeps the Bundle ``next`` link for the FHIR
fallback layer, and reports malformed entries as :class:`DataIssue` instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Required, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

# pydantic needs typing_extensions.TypedDict before Python 3.12.
from typing_extensions import TypedDict

from fhir_mappings.facts import DataIssue, Provenance

__all__ = [
    "CONDITION",
    "CONDITIONS",
    "MEDICATION",
    "MEDICATION_REQUEST",
    "MEDICATION_REQUESTS",
    "OBSERVATION",
    "OBSERVATIONS",
    "PATIENT",
    "Annotation",
    "Bundle",
    "BundleEntry",
    "BundleLink",
    "CodeableConcept",
    "Coding",
    "Condition",
    "Dosage",
    "Medication",
    "MedicationRequest",
    "Observation",
    "ObservationComponent",
    "OperationOutcome",
    "Patient",
    "Period",
    "PrefetchValue",
    "Quantity",
    "Ratio",
    "Reference",
    "ReferenceRangeElement",
    "classify_prefetch_value",
    "validate_many",
]


_IGNORE_EXTRA = ConfigDict(extra="ignore")


@with_config(_IGNORE_EXTRA)
class Coding(TypedDict, total=False):
    system: str | None
    code: str | None
    display: str | None


@with_config(_IGNORE_EXTRA)
class CodeableConcept(TypedDict, total=False):
    coding: list[Coding]
    text: str | None


@with_config(_IGNORE_EXTRA)
class Quantity(TypedDict, total=False):
    # Kept as sent: FHIR requires a JSON number, and a string, boolean, NaN or Infinity is reported as an
    # unusable value by the reader (``fhir_mappings.values.finite_number``), never coerced.
    value: Any
    comparator: str | None
    unit: str | None
    system: str | None
    code: str | None


@with_config(_IGNORE_EXTRA)
class Ratio(TypedDict, total=False):
    numerator: Quantity
    denominator: Quantity


@with_config(_IGNORE_EXTRA)
class Period(TypedDict, total=False):
    start: str | None
    end: str | None


@with_config(_IGNORE_EXTRA)
class Reference(TypedDict, total=False):
    reference: str | None
    display: str | None


@with_config(_IGNORE_EXTRA)
class Annotation(TypedDict, total=False):
    text: str | None


@with_config(_IGNORE_EXTRA)
class ReferenceRangeElement(TypedDict, total=False):
    low: Quantity
    high: Quantity
    text: str | None


@with_config(_IGNORE_EXTRA)
class Patient(TypedDict, total=False):
    resourceType: Required[Literal["Patient"]]
    id: str
    birthDate: str
    gender: str
    deceasedBoolean: bool
    deceasedDateTime: str


@with_config(_IGNORE_EXTRA)
class ObservationComponent(TypedDict, total=False):
    code: CodeableConcept
    valueQuantity: Quantity
    valueString: str
    valueCodeableConcept: CodeableConcept
    valueInteger: Any
    valueRatio: Ratio
    dataAbsentReason: CodeableConcept
    interpretation: list[CodeableConcept]
    referenceRange: list[ReferenceRangeElement]


@with_config(_IGNORE_EXTRA)
class Observation(TypedDict, total=False):
    resourceType: Required[Literal["Observation"]]
    id: str
    status: str
    code: CodeableConcept
    effectiveDateTime: str
    effectiveInstant: str
    effectivePeriod: Period
    # The report time: the date of a result only when effective[x] is absent (issue 11).
    issued: str
    valueQuantity: Quantity
    valueString: str
    valueCodeableConcept: CodeableConcept
    valueInteger: Any
    valueRatio: Ratio
    dataAbsentReason: CodeableConcept
    interpretation: list[CodeableConcept]
    referenceRange: list[ReferenceRangeElement]
    note: list[Annotation]
    bodySite: CodeableConcept
    # Panels: values in components (calcium and phosphate in one Observation), or member Observations.
    component: list[ObservationComponent]
    hasMember: list[Reference]


@with_config(_IGNORE_EXTRA)
class Condition(TypedDict, total=False):
    resourceType: Required[Literal["Condition"]]
    id: str
    clinicalStatus: CodeableConcept
    verificationStatus: CodeableConcept
    code: CodeableConcept
    bodySite: list[CodeableConcept]
    onsetDateTime: str
    onsetPeriod: Period
    recordedDate: str
    # Any abatement[x] without a clinicalStatus means the condition has ended (FHIR R4 invariant con-4).
    abatementDateTime: str
    abatementPeriod: Period
    abatementString: str
    abatementAge: dict[str, Any]
    abatementRange: dict[str, Any]
    note: list[Annotation]


@with_config(_IGNORE_EXTRA)
class Ingredient(TypedDict, total=False):
    itemCodeableConcept: CodeableConcept


@with_config(_IGNORE_EXTRA)
class Medication(TypedDict, total=False):
    resourceType: Required[Literal["Medication"]]
    id: str
    code: CodeableConcept
    ingredient: list[Ingredient]


@with_config(_IGNORE_EXTRA)
class TimingRepeat(TypedDict, total=False):
    boundsPeriod: Period


@with_config(_IGNORE_EXTRA)
class Timing(TypedDict, total=False):
    repeat: TimingRepeat


@with_config(_IGNORE_EXTRA)
class Dosage(TypedDict, total=False):
    text: str | None
    route: CodeableConcept
    timing: Timing


@with_config(_IGNORE_EXTRA)
class DispenseRequest(TypedDict, total=False):
    validityPeriod: Period


@with_config(_IGNORE_EXTRA)
class MedicationRequest(TypedDict, total=False):
    resourceType: Required[Literal["MedicationRequest"]]
    id: str
    status: str
    intent: str
    medicationCodeableConcept: CodeableConcept
    medicationReference: Reference
    # Contained resources stay raw: only a contained Medication is read (and validated) when referenced.
    contained: list[dict[str, Any]]
    authoredOn: str
    dosageInstruction: list[Dosage]
    dispenseRequest: DispenseRequest
    note: list[Annotation]


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


def _issue(detail: str, resource: Mapping[str, Any] | None = None) -> DataIssue:
    provenance = None
    if resource is not None:
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        provenance = Provenance(rtype if isinstance(rtype, str) else "unknown", rid if isinstance(rid, str) else None)
    return DataIssue("malformed-resource", detail, provenance)


def _outcome(resource: Mapping[str, Any]) -> OperationOutcome | DataIssue:
    try:
        return _OUTCOME.validate_python(resource)
    except ValidationError as exc:
        return _issue(f"OperationOutcome skipped: {exc.error_count()} invalid field(s)", resource)


def _entries(bundle: Mapping[str, Any]) -> tuple[list[BundleEntry], list[DataIssue]]:
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        return [], [_issue("Bundle.entry is not a list; no entry read", bundle)]
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
            issues.append(_issue(f"Bundle.entry[{index}] skipped: {exc.error_count()} invalid field(s)", bundle))
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
        return PrefetchValue("null", issues=(_issue("prefetch value is not a FHIR resource; treated as absent"),))
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
            issues.append(_issue(f"Bundle.entry[{index}].resource is not a FHIR resource; skipped", value))
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


T = TypeVar("T")


def validate_many(
    name: str, adapter: TypeAdapter[list[T]], one: TypeAdapter[T], raws: list[Mapping[str, Any]]
) -> tuple[list[T], list[DataIssue]]:
    """Validate resources in one call; on any failure, one by one so that a bad resource only loses itself."""
    try:
        return adapter.validate_python(raws), []
    except ValidationError:
        pass
    good: list[T] = []
    issues: list[DataIssue] = []
    for raw in raws:
        try:
            good.append(one.validate_python(raw))
        except ValidationError as exc:
            issues.append(_issue(f"{name} skipped: {exc.error_count()} invalid field(s)", raw))
    return good, issues


PATIENT: TypeAdapter[Patient] = TypeAdapter(Patient)
OBSERVATION: TypeAdapter[Observation] = TypeAdapter(Observation)
OBSERVATIONS: TypeAdapter[list[Observation]] = TypeAdapter(list[Observation])
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)
CONDITIONS: TypeAdapter[list[Condition]] = TypeAdapter(list[Condition])
MEDICATION: TypeAdapter[Medication] = TypeAdapter(Medication)
MEDICATION_REQUEST: TypeAdapter[MedicationRequest] = TypeAdapter(MedicationRequest)
MEDICATION_REQUESTS: TypeAdapter[list[MedicationRequest]] = TypeAdapter(list[MedicationRequest])
