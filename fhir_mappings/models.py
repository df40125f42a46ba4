"""Narrow pydantic schemas of the FHIR R4 fields this service reads, and prefetch classification.

Each resource is a ``TypedDict`` validated by pydantic v2 (``extra="ignore"``): only the elements the mapping
layer uses are declared and kept. Typed dicts rather than ``BaseModel`` classes because validation is about
three times faster and the Observation path is the hot one (see ``docs/decisions.md``). This follows the
clinical brief §9.8 (FR Core: unknown extensions are ignored; ``birthDate`` and ``gender`` are all the rules
need from Patient).
Prefetch values (Bundles, OperationOutcomes, ``null``) are classified in :mod:`fhir_mappings.prefetch`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    "PROCEDURE",
    "PROCEDURES",
    "Annotation",
    "CodeableConcept",
    "Coding",
    "Condition",
    "Dosage",
    "Medication",
    "MedicationRequest",
    "Observation",
    "ObservationComponent",
    "Patient",
    "Period",
    "Procedure",
    "Quantity",
    "Ratio",
    "Reference",
    "ReferenceRangeElement",
    "malformed_issue",
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
    valueDateTime: str
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
class Procedure(TypedDict, total=False):
    resourceType: Required[Literal["Procedure"]]
    id: str
    status: str
    code: CodeableConcept
    performedDateTime: str
    performedPeriod: Period
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


T = TypeVar("T")


def malformed_issue(detail: str, resource: Mapping[str, Any] | None = None) -> DataIssue:
    """A resource (or Bundle entry) skipped because it does not validate: what and where, never its content."""
    provenance = None
    if resource is not None:
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        provenance = Provenance(rtype if isinstance(rtype, str) else "unknown", rid if isinstance(rid, str) else None)
    return DataIssue("malformed-resource", detail, provenance)


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
            issues.append(malformed_issue(f"{name} skipped: {exc.error_count()} invalid field(s)", raw))
    return good, issues


PATIENT: TypeAdapter[Patient] = TypeAdapter(Patient)
OBSERVATION: TypeAdapter[Observation] = TypeAdapter(Observation)
OBSERVATIONS: TypeAdapter[list[Observation]] = TypeAdapter(list[Observation])
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)
CONDITIONS: TypeAdapter[list[Condition]] = TypeAdapter(list[Condition])
MEDICATION: TypeAdapter[Medication] = TypeAdapter(Medication)
MEDICATION_REQUEST: TypeAdapter[MedicationRequest] = TypeAdapter(MedicationRequest)
MEDICATION_REQUESTS: TypeAdapter[list[MedicationRequest]] = TypeAdapter(list[MedicationRequest])
PROCEDURE: TypeAdapter[Procedure] = TypeAdapter(Procedure)
PROCEDURES: TypeAdapter[list[Procedure]] = TypeAdapter(list[Procedure])
