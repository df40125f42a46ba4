"""Raw FHIR R4 resources to :class:`PatientFacts`: the one entry point of the mapping layer.

Implements the reading rules of the clinical brief as a whole: §1 and §4 (labs, units, ranges), §2 and §9.5
(conditions, skin findings, body sites), §3 and §9.7 (medications), §4b–§4d (derived values), §5b and rules
C1–C3, C5 (§5e). Pure: ``now`` is passed in, nothing reads the clock, and a malformed resource is skipped and
reported as a :class:`DataIssue`, never raised.

Decisions on undocumented corners are recorded in ``docs/decisions.md`` (section "fhir_mappings").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from fhir_mappings._common import aware, codings, parse_date, parse_datetime
from fhir_mappings.conditions import (
    FindingsCollector,
    add_calciphylaxis_proxies,
    ckd_stage,
    read_condition,
    read_finding_observation,
)
from fhir_mappings.derived import ca_x_p, calcium_for_draw, egfr_ckd_epi_2021, nearest_within
from fhir_mappings.facts import (
    AnalyteSeries,
    ConditionFact,
    DataIssue,
    DerivedValue,
    LabValue,
    MedicationFact,
    PatientFacts,
    Provenance,
)
from fhir_mappings.labs import LabContext, build_series, lab_value
from fhir_mappings.medications import read_medication_request
from fhir_mappings.models import (
    CONDITION,
    CONDITIONS,
    MEDICATION_REQUEST,
    MEDICATION_REQUESTS,
    OBSERVATION,
    OBSERVATIONS,
    PATIENT,
    CodeableConcept,
    Coding,
    Observation,
    ObservationComponent,
    Patient,
    validate_many,
)
from fhir_mappings.terminology import ConceptMatch, concept_groups, concept_ids, fold_text, lookup

__all__ = ["MappingOptions", "build_facts"]

Sex = Literal["female", "male", "other", "unknown"]
_SEXES: dict[str, Sex] = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
_NEVER = datetime.min.replace(tzinfo=UTC)
_SEROLOGY = frozenset(cid for cid in concept_ids("lab") if "serology" in concept_groups(cid))


@dataclass(frozen=True, slots=True)
class MappingOptions:
    # Brief §5b and rule C1: values inside the window are "current"; older ones are history only.
    chemistry_lookback_days: int = 90
    serology_lookback_days: int = 365
    # Brief §5d: Ca × P only from draws within 7 days of each other.
    ca_p_pairing_hours: float = 168.0
    # Brief §4b and rule C2: albumin (or ionized calcium) within 48 h of the calcium.
    albumin_pairing_hours: float = 48.0
    # Brief §4b leaves correction at albumin ≥ 4.0 g/dL to configuration; default: do not correct.
    correct_calcium_when_albumin_at_least_4: bool = False
    # Languages of the name lists used for medications and body sites.
    locale_text_matching: tuple[str, ...] = ("en", "fr")


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


class _Labs:
    """Lab values grouped by analyte, in arrival order."""

    def __init__(self) -> None:
        self.values: dict[str, list[LabValue]] = {}

    def add(self, value: LabValue) -> None:
        self.values.setdefault(value.analyte, []).append(value)


def _lab_match(concept: CodeableConcept | None) -> tuple[Coding, ConceptMatch] | None:
    for coding in codings(concept):
        match = lookup(coding.get("system"), coding.get("code"))
        if match is not None and match.kind == "lab":
            return coding, match
    return None


# Words of the analytes the engine reads: an Observation named with one of them but coded with a code the
# tables do not hold is reported, so the card says "not a verified code" rather than "missing" (issue 11).
_ANALYTE_WORDS: Final = re.compile(
    r"\b(?:calcium|phosphat\w*|phosphore|creatinin\w*|albumin\w*|parathyr\w*|pth|vitamin\w* d|"
    r"25.?oh|glomerular|dfg|egfr|magnesium|bicarbonate|alkaline phosphatase|phosphatases? alcalines?)\b"
)


# Urine tests and ratios are other quantities than the serum values the rules read.
_NOT_SERUM: Final = re.compile(r"\b(?:urine|urinaire|urinary|ratio|rapport)\b")


def _unverified_lab(obs: Observation) -> DataIssue | None:
    concept = obs.get("code")
    names = [t for t in (concept.get("text") if concept else None, *(c.get("display") for c in codings(concept))) if t]
    named = next((n for n in names if _ANALYTE_WORDS.search(folded := fold_text(n)) and not _NOT_SERUM.search(folded)),
                 None)
    if named is None:
        return None
    sent = ", ".join(f"{c.get('code')}" for c in codings(concept) if c.get("code")) or "no code"
    return DataIssue(
        "unverified-lab-code",
        f"{named} ({sent}) is not a laboratory code this service has verified; not used",
        Provenance("Observation", obs.get("id"), display=named),
    )


def _read_observations(
    observations: Sequence[Observation],
    context: LabContext,
    collector: FindingsCollector,
    locales: tuple[str, ...],
    issues: list[DataIssue],
) -> _Labs:
    labs = _Labs()
    seen: dict[str, list[Observation]] = {}
    sent_ids = {obs["id"] for obs in observations if obs.get("id")}
    for obs in observations:
        resource_id = obs.get("id")
        if resource_id is not None:
            # A member of a panel can arrive twice (matched by the search and included by the panel): the
            # same resource is read once.
            same_id = seen.setdefault(resource_id, [])
            if any(other == obs for other in same_id):
                continue
            same_id.append(obs)
        readings: list[tuple[tuple[Coding, ConceptMatch], ObservationComponent | None]] = []
        if (own := _lab_match(obs.get("code"))) is not None:
            readings.append((own, None))
        for component in obs.get("component", []):
            if (matched := _lab_match(component.get("code"))) is not None:
                readings.append((matched, component))
        members = [m.get("reference") or "" for m in obs.get("hasMember", [])]
        missing = [m for m in members if m.rsplit("/", 1)[-1] not in sent_ids]
        if missing:
            issues.append(DataIssue(
                "panel-members-not-sent",
                f"{len(missing)} member result(s) of panel Observation/{resource_id} were not sent; not read",
                Provenance("Observation", resource_id),
            ))
        if not readings:
            if members:
                continue
            unverified = _unverified_lab(obs)
            if unverified is not None:
                issues.append(unverified)
                continue
            # Not a laboratory analyte of the brief: it may still carry a skin finding (code, value or text).
            read_finding_observation(obs, collector, locales)
            continue
        for (coding, match), part in readings:
            result = lab_value(obs, coding, match, context, part)
            if isinstance(result, LabValue):
                labs.add(result)
            elif result is not None:
                issues.append(result)
    return labs


def _series(labs: _Labs, now: datetime, options: MappingOptions) -> dict[str, AnalyteSeries]:
    series: dict[str, AnalyteSeries] = {}
    for analyte, values in labs.values.items():
        days = options.serology_lookback_days if analyte in _SEROLOGY else options.chemistry_lookback_days
        series[analyte] = build_series(analyte, values, now=now, lookback_days=days)
    return series


def _current(series: Mapping[str, AnalyteSeries], analyte: str, now: datetime, days: int) -> list[LabValue]:
    """Dated, numeric values of ``analyte`` inside the look-back window, newest first (rule C1)."""
    found = series.get(analyte)
    if found is None:
        return []
    start = now - timedelta(days=days)
    return [
        v
        for v in found.history
        if v.effective is not None
        and v.value is not None
        and v.comparator is None
        and start <= v.effective
        and v.effective <= now + timedelta(days=1)
    ]


def _derived(
    series: Mapping[str, AnalyteSeries],
    now: datetime,
    age: float | None,
    sex: Sex,
    options: MappingOptions,
    issues: list[DataIssue],
) -> dict[str, DerivedValue]:
    days = options.chemistry_lookback_days
    totals = _current(series, "calcium_total", now, days)
    reported_corrected = _current(series, "calcium_corrected", now, days)
    albumin = series["albumin"].history if "albumin" in series else ()
    ionized = series["calcium_ionized"].history if "calcium_ionized" in series else ()
    phosphate = _current(series, "phosphate", now, days)

    def calcium_of(value: LabValue) -> DerivedValue | None:
        return calcium_for_draw(
            value,
            albumin=albumin,
            ionized=ionized,
            albumin_pairing_hours=options.albumin_pairing_hours,
            correct_when_albumin_at_least_4=options.correct_calcium_when_albumin_at_least_4,
        )

    derived: dict[str, DerivedValue] = {}
    candidates = sorted([*totals, *reported_corrected], key=_when, reverse=True)
    if candidates and (calcium := calcium_of(candidates[0])) is not None:
        derived["calcium_corrected"] = calcium
    for candidate in candidates:
        paired = nearest_within(candidate, phosphate, options.ca_p_pairing_hours)
        calcium = calcium_of(candidate) if paired is not None else None
        if paired is not None and calcium is not None and (product := ca_x_p(calcium, paired)) is not None:
            derived["ca_x_p"] = product
            break
    egfr = _egfr(series, now, age, sex, days, issues)
    if egfr is not None:
        derived["egfr_ckd_epi_2021"] = egfr
    return derived


def _when(value: LabValue) -> datetime:
    return value.effective or _NEVER


def _egfr(
    series: Mapping[str, AnalyteSeries],
    now: datetime,
    age: float | None,
    sex: Sex,
    days: int,
    issues: list[DataIssue],
) -> DerivedValue | None:
    """CKD-EPI 2021 from the latest current creatinine, only when no current eGFR was reported (§4d)."""
    reported = series.get("egfr")
    if reported is not None and reported.latest is not None:
        return None
    creatinine = _current(series, "creatinine", now, days)
    if not creatinine:
        return None
    if age is None or age < 18 or sex not in {"female", "male"}:
        why = "age under 18 (CKD-EPI 2021 is for adults)" if age is not None and age < 18 else "age or sex unknown"
        issues.append(DataIssue("egfr-not-computed", f"eGFR not computed from creatinine: {why}"))
        return None
    latest = creatinine[0]
    value = egfr_ckd_epi_2021(latest.value or 0.0, age, "female" if sex == "female" else "male")
    return DerivedValue(
        "egfr_ckd_epi_2021",
        value,
        "mL/min/{1.73_m2}",
        "CKD-EPI 2021 creatinine equation (race-free)",
        (latest,),
        latest.effective,
    )


def build_facts(
    *,
    patient: Mapping[str, Any] | None,
    observations: Iterable[Mapping[str, Any]] | None,
    conditions: Iterable[Mapping[str, Any]] | None,
    medications: Iterable[Mapping[str, Any]] | None,
    now: datetime,
    options: MappingOptions = MappingOptions(),
    medication_definitions: Mapping[str, Mapping[str, Any]] | None = None,
    unavailable: Iterable[str] = (),
) -> PatientFacts:
    """Read the prefetch resources (already unwrapped from their Bundles) into PatientFacts.

    ``medication_definitions``: Medication resources sent beside the requests, by reference
    ("Medication/<id>" or a fullUrl). ``unavailable``: data kinds ("medications", ...) whose source failed, so
    that rules needing them say "unknown" instead of reading "none".
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
    labs = _read_observations(observation_models, LabContext(age, sex), collector, locales, issues)
    series = _series(labs, now, options)

    condition_facts: list[ConditionFact] = []
    for condition in _validated("Condition", CONDITIONS, CONDITION, conditions, issues):
        condition_facts.extend(read_condition(condition, collector, locales, now))
    add_calciphylaxis_proxies(condition_facts, collector)

    medication_facts: list[MedicationFact] = []
    for request in _validated("MedicationRequest", MEDICATION_REQUESTS, MEDICATION_REQUEST, medications, issues):
        facts, medication_issues = read_medication_request(request, locales, medication_definitions)
        medication_facts.extend(facts)
        issues.extend(medication_issues)

    derived = _derived(series, now, age, sex, options, issues)
    egfr_series = series.get("egfr")
    ckd = ckd_stage(condition_facts, egfr_series.latest if egfr_series else None, derived.get("egfr_ckd_epi_2021"))
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
        # The brief verifies no pregnancy code, so pregnancy is never read (see docs/decisions.md).
        pregnant=False,
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
