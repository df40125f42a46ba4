"""MedicationRequests to :class:`MedicationFact`.

Implements the clinical brief §3a–§3b and §9.7: matching order ATC (exact code under either ATC URI), then
RxNorm (verified ingredient and clinical-drug codes), then EN/FR ingredient names (accent- and
case-insensitive, synonym lists of §3b and rule C7), and last the ATC classes the brief names (M05BA
bisphosphonates, A11CC vitamin D). CIP and UCD codes are accepted but never mapped from their digits; their
display text is matched by name instead. A contained ``Medication`` ("#id") or one sent beside the requests
(``search.mode: include``, "Medication/<id>") is resolved through ``medicationReference`` before matching
(§9.8; issue 11: a brand display such as "COUMADIN 5 MG" must not lose its warfarin ingredient).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from pydantic import ValidationError

from fhir_mappings._common import codings, match_codings, parse_datetime, provenance_for
from fhir_mappings.facts import DataIssue, MedicationFact, Provenance
from fhir_mappings.models import MEDICATION, CodeableConcept, Coding, MedicationRequest, Period
from fhir_mappings.terminology import (
    ATC,
    RXNORM,
    ConceptMatch,
    atc_class_concept,
    canonical_system,
    concept_groups,
    find_medication_names,
    fold_text,
)

__all__ = ["read_medication_request"]

MatchedBy = Literal["atc", "rxnorm", "name"]
_CODE_ORDER: Final[tuple[tuple[str, MatchedBy], ...]] = ((ATC, "atc"), (RXNORM, "rxnorm"))


def _concepts_of(raw: Mapping[str, Any]) -> list[CodeableConcept] | None:
    try:
        medication = MEDICATION.validate_python(raw)
    except ValidationError:
        return None
    concepts = [medication["code"]] if medication.get("code") else []
    concepts += [item for i in medication.get("ingredient", []) if (item := i.get("itemCodeableConcept"))]
    return concepts


def _referenced(target: str, definitions: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A Medication sent beside the requests (``search.mode: include``), by relative, absolute or fullUrl reference."""
    found = definitions.get(target)
    if found is None and "/Medication/" in f"/{target}":
        found = definitions.get("Medication/" + target.rsplit("/Medication/", 1)[-1].split("/_history", 1)[0])
    return found


def _resolve(
    request: MedicationRequest, definitions: Mapping[str, Mapping[str, Any]]
) -> tuple[list[CodeableConcept], list[DataIssue]]:
    """The medication's code and, for a contained or included Medication, its code and ingredients."""
    concept = request.get("medicationCodeableConcept")
    if concept:
        return [concept], []
    reference = request.get("medicationReference")
    if not reference:
        return [], []
    target = reference.get("reference") or ""
    raw: Mapping[str, Any] | None = None
    if target.startswith("#"):
        raw = next((c for c in request.get("contained", [])
                    if c.get("resourceType") == "Medication" and c.get("id") == target[1:]), None)
    elif target:
        raw = _referenced(target, definitions)
    concepts = _concepts_of(raw) if raw is not None else None
    if concepts is not None:
        return concepts, []
    issue = DataIssue(
        "unresolved-medication",
        f"medicationReference {target or '(empty)'} was not sent (contained or included); matched on its display only",
        Provenance("MedicationRequest", request.get("id")),
    )
    display = reference.get("display")
    return ([CodeableConcept(text=display)] if display else []), [issue]


def _by_code(items: list[Coding]) -> tuple[list[tuple[Coding, ConceptMatch]], MatchedBy | None]:
    for system, matched_by in _CODE_ORDER:
        found = [
            (coding, match)
            for coding, match in match_codings(items)
            if match.kind == "medication" and canonical_system(coding.get("system")) == system
        ]
        if found:
            return found, matched_by
    return [], None


def _period(request: MedicationRequest) -> Period | None:
    validity = (request.get("dispenseRequest") or {}).get("validityPeriod")
    if validity:
        return validity
    for dosage in request.get("dosageInstruction", []):
        bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")
        if bounds:
            return bounds
    return None


def _route(request: MedicationRequest) -> str | None:
    for dosage in request.get("dosageInstruction", []):
        route = dosage.get("route")
        if route:
            return route.get("text") or next((c.get("display") or c.get("code") for c in codings(route)), None)
    return None


def read_medication_request(
    request: MedicationRequest,
    locales: tuple[str, ...],
    definitions: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[MedicationFact], list[DataIssue]]:
    """``definitions``: Medication resources sent beside the requests, keyed "Medication/<id>" (and fullUrl)."""
    concepts, issues = _resolve(request, definitions or {})
    items = [coding for concept in concepts for coding in codings(concept)]
    texts = [
        t for concept in concepts for t in (concept.get("text"), *(c.get("display") for c in codings(concept))) if t
    ]
    shown = texts[0] if texts else None
    resource_id = request.get("id")
    found: list[tuple[str, Provenance]] = []
    coded, matched_by = _by_code(items)
    for coding, match in coded:
        found.append((match.concept_id, provenance_for("MedicationRequest", resource_id, coding, match, shown)))
    if not found and texts:
        for concept_id in find_medication_names(fold_text(" \n ".join(texts)), locales):
            found.append((concept_id, Provenance("MedicationRequest", resource_id, display=shown, original=shown)))
            matched_by = "name"
    if not found:
        for coding in items:
            atc_code = coding.get("code")
            if canonical_system(coding.get("system")) == ATC and atc_code and (cid := atc_class_concept(atc_code)):
                found.append((cid, provenance_for("MedicationRequest", resource_id, coding, None, shown)))
                matched_by = "atc"
                break
    if not found or matched_by is None:
        return [], issues
    period = _period(request)
    facts = [
        MedicationFact(
            concept=concept_id,
            provenance=provenance,
            groups=concept_groups(concept_id),
            status=request.get("status"),
            intent=request.get("intent"),
            authored=parse_datetime(request.get("authoredOn")),
            period_start=parse_datetime(period.get("start")) if period else None,
            period_end=parse_datetime(period.get("end")) if period else None,
            route=_route(request),
            matched_by=matched_by,
            text=shown,
        )
        for concept_id, provenance in _unique(found)
    ]
    return facts, issues


def _unique(found: Iterable[tuple[str, Provenance]]) -> list[tuple[str, Provenance]]:
    seen: dict[str, Provenance] = {}
    for concept_id, provenance in found:
        seen.setdefault(concept_id, provenance)
    return list(seen.items())
