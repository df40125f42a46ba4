"""Raw FHIR R4 resources to :class:`PatientFacts`: the one entry point of the mapping layer.

Implements the reading rules of the clinical brief as a whole: §1 and §4 (labs, units, ranges), §2 and §9.5
(conditions, skin findings, body sites), §3 and §9.7 (medications), §4b–§4d (derived values), §5b and rules
C1–C3, C5 (§5e). Pure: ``now`` is passed in, nothing reads the clock, and a malformed resource is skipped and
reported as a :class:`DataIssue`, never raised.

Decisions on undocumented corners are recorded in ``docs/decisions.md`` (section "fhir_mappings").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from fhir_mappings._common import aware, parse_date, parse_datetime
from fhir_mappings.conditions import (
    FindingsCollector,
    add_calciphylaxis_proxies,
    ckd_stage,
    read_condition,
)
from fhir_mappings.context import mechanical_valve_status, status_of
from fhir_mappings.derived_values import cockcroft_gault, compute_derived, lookback_days
from fhir_mappings.facts import (
    AnalyteSeries,
    ConditionFact,
    DataIssue,
    MedicationFact,
    PatientFacts,
)
from fhir_mappings.labs import LabContext, build_series
from fhir_mappings.medications import read_medication_request
from fhir_mappings.models import (
    CONDITION,
    CONDITIONS,
    MEDICATION_REQUEST,
    MEDICATION_REQUESTS,
    OBSERVATION,
    OBSERVATIONS,
    PATIENT,
    PROCEDURE,
    PROCEDURES,
    Observation,
    Patient,
    validate_many,
)
from fhir_mappings.observations import LabValues, read_observations
from fhir_mappings.options import MappingOptions
from fhir_mappings.procedures import read_procedure
from fhir_mappings.terminology import concept_groups, concept_ids

__all__ = ["MappingOptions", "build_facts"]

DEFAULT_OPTIONS = MappingOptions()

Sex = Literal["female", "male", "other", "unknown"]
_SEXES: dict[str, Sex] = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
_SEROLOGY = frozenset(cid for cid in concept_ids("lab") if "serology" in concept_groups(cid))


def _raw_list(
    resources: Iterable[Mapping[str, Any]] | None, resource_type: str, issues: list[DataIssue]
) -> list[Mapping[str, Any]]:
    """The raw dicts of the wanted resource type; anything else is reported and skipped."""
    raws: list[Mapping[str, Any]] = []
    for resource in resources or ():
        # type() first: the abstract isinstance check is slow and nearly every resource is a plain dict.
        if (type(resource) is dict or isinstance(resource, Mapping)) and resource.get("resourceType") == resource_type:
            raws.append(resource)
        else:
            rtype = resource.get("resourceType") if isinstance(resource, Mapping) else type(resource).__name__
            issues.append(DataIssue("unexpected-resource", f"expected {resource_type}, got {rtype!r}; skipped"))
    return raws


T = TypeVar("T")


def _validated(
    resource_type: str,
    many: TypeAdapter[list[T]],
    one: TypeAdapter[T],
    resources: Iterable[Mapping[str, Any]] | None,
    issues: list[DataIssue],
) -> list[T]:
    good, bad = validate_many(resource_type, many, one, _raw_list(resources, resource_type, issues))
    issues.extend(bad)
    return good


def _patient(raw: Mapping[str, Any] | None, issues: list[DataIssue]) -> Patient | None:
    if raw is None:
        return None
    try:
        return PATIENT.validate_python(raw)
    except ValidationError as exc:
        issues.append(DataIssue("malformed-resource", f"Patient skipped: {exc.error_count()} invalid field(s)"))
        return None


def _age_years(birth: date | None, now: datetime) -> float | None:
    return None if birth is None else (now.date() - birth).days / 365.25


def _series(labs: LabValues, now: datetime, options: MappingOptions) -> dict[str, AnalyteSeries]:
    series: dict[str, AnalyteSeries] = {}
    for analyte, values in labs.values.items():
        days = lookback_days(analyte, options, _SEROLOGY)
        series[analyte] = build_series(analyte, values, now=now, lookback_days=days)
    return series


def build_facts(
    *,
    patient: Mapping[str, Any] | None,
    observations: Iterable[Mapping[str, Any]] | None,
    conditions: Iterable[Mapping[str, Any]] | None,
    medications: Iterable[Mapping[str, Any]] | None,
    now: datetime,
    options: MappingOptions = DEFAULT_OPTIONS,
    medication_definitions: Mapping[str, Mapping[str, Any]] | None = None,
    procedures: Iterable[Mapping[str, Any]] | None = None,
    unavailable: Iterable[str] = (),
) -> PatientFacts:
    """Read the prefetch resources (already unwrapped from their Bundles) into PatientFacts.

    ``medication_definitions``: Medication resources sent beside the requests, by reference
    ("Medication/<id>" or a fullUrl). ``procedures``: Procedure resources, when the EHR sends them.
    ``unavailable``: data kinds ("medications", ...) whose source failed, so that rules needing them say
    "unknown" instead of reading "none".
    """
    now = aware(now)
    issues: list[DataIssue] = []
    locales = options.locale_text_matching
    patient_model = _patient(patient, issues)
    birth, partial = parse_date(patient_model.get("birthDate") if patient_model else None)
    if partial:
        issues.append(DataIssue("partial-birth-date", "birthDate gives only a year or month; age is approximate"))
    sex: Sex = _SEXES.get((patient_model.get("gender") or "unknown") if patient_model else "unknown", "unknown")
    age = _age_years(birth, now)
    if birth is None:
        issues.append(DataIssue("no-birth-date", "Patient.birthDate is missing: age-dependent rules not applied"))

    collector = FindingsCollector()
    observation_models = _validated("Observation", OBSERVATIONS, OBSERVATION, observations, issues)
    context_observations: list[Observation] = []
    labs = read_observations(observation_models, LabContext(age, sex), collector, locales, issues,
                             context_observations)
    series = _series(labs, now, options)

    condition_facts: list[ConditionFact] = []
    for condition in _validated("Condition", CONDITIONS, CONDITION, conditions, issues):
        condition_facts.extend(read_condition(condition, collector, locales, now))
    for procedure in _validated("Procedure", PROCEDURES, PROCEDURE, procedures, issues):
        condition_facts.extend(read_procedure(procedure, now))
    add_calciphylaxis_proxies(condition_facts, collector)

    medication_facts: list[MedicationFact] = []
    for request in _validated("MedicationRequest", MEDICATION_REQUESTS, MEDICATION_REQUEST, medications, issues):
        facts, medication_issues = read_medication_request(request, locales, medication_definitions)
        medication_facts.extend(facts)
        issues.extend(medication_issues)

    derived = compute_derived(series, now, age, sex, options, issues)
    egfr_series = series.get("egfr")
    ckd, superseded = ckd_stage(
        condition_facts, egfr_series.latest if egfr_series else None, derived.get("egfr_ckd_epi_2021")
    )
    if superseded:
        condition_facts = [replace(c, superseded_by=superseded[id(c)]) if id(c) in superseded else c
                           for c in condition_facts]
    crcl = cockcroft_gault(series, age, sex, ckd)
    if crcl is not None:
        derived["crcl_cockcroft_gault"] = crcl
    return PatientFacts(
        now=now,
        patient_id=patient_model.get("id") if patient_model else None,
        birth_date=birth,
        sex=sex,
        labs=series,
        conditions=tuple(condition_facts),
        medications=tuple(medication_facts),
        skin=collector.build(),
        derived=derived,
        ckd=ckd,
        issues=tuple(issues),
        pregnancy=status_of("pregnancy", conditions=condition_facts, observations=context_observations, now=now,
                            sex=sex, age_years=age),
        breastfeeding=status_of("breastfeeding", conditions=condition_facts, observations=context_observations,
                                now=now, sex=sex, age_years=age),
        mechanical_valve=mechanical_valve_status(condition_facts),
        deceased=_deceased(patient_model, now),
        unavailable=frozenset(unavailable),
    )


def _deceased(patient: Patient | None, now: datetime) -> bool:
    if patient is None:
        return False
    if patient.get("deceasedBoolean") is True:
        return True
    died = parse_datetime(patient.get("deceasedDateTime"))
    return died is not None and died <= now + timedelta(days=1)
