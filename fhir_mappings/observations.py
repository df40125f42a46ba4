"""Observations to laboratory values, context observations and skin findings.

Each Observation is one of: a laboratory result of an analyte the engine reads (or several, for a panel with
``component`` values), a context observation (pregnancy or breastfeeding status: ``fhir_mappings.context``),
an analyte named with a code the tables do not verify (reported, never read), or a non-laboratory Observation
that may carry a skin finding. Implements the clinical brief §1, §4 and issue 11 (panels, duplicates).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from fhir_mappings._common import codings
from fhir_mappings.conditions import FindingsCollector, read_finding_observation
from fhir_mappings.context import is_context_observation
from fhir_mappings.facts import DataIssue, LabValue, Provenance
from fhir_mappings.labs import LabContext, lab_value
from fhir_mappings.models import CodeableConcept, Coding, Observation, ObservationComponent
from fhir_mappings.terminology import ConceptMatch, fold_text, lookup

__all__ = ["LabValues", "read_observations"]


class LabValues:
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


def read_observations(
    observations: Sequence[Observation],
    context: LabContext,
    collector: FindingsCollector,
    locales: tuple[str, ...],
    issues: list[DataIssue],
    context_observations: list[Observation],
) -> LabValues:
    labs = LabValues()
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
            if is_context_observation(obs):
                context_observations.append(obs)
                continue
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
