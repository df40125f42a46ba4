"""Glue between a CDS Hooks call and the engine: resources -> PatientFacts -> Assessment -> cards.

The engine itself is pure; this module only picks the resources out of the resolved prefetch, guards
against data about another patient, and packages what the audit trail records.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fhir_mappings import MappingOptions, build_facts
from fhir_mappings.facts import PatientFacts
from hooks.engine.assessment import Assessment, assess
from hooks.engine.cards import render_cards
from hooks.engine.snapshot import assessment_snapshot
from hooks.errors import BadRequest
from hooks.models import CdsResponse
from hooks.registry import HookCall, HookOutcome

__all__ = ["assess_hook_call", "assess_resources", "facts_from_resources"]


def _subject_is(resource: dict[str, Any], aliases: frozenset[str]) -> bool:
    """Keep resources about this patient; a resource without a subject is kept (the EHR scoped the query)."""
    subject = resource.get("subject") or resource.get("patient")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str):
        return True
    return reference in aliases or any(reference.endswith("/" + alias) for alias in aliases if "/" in alias)


def _of_type(resources: Iterable[dict[str, Any]], resource_type: str, aliases: frozenset[str]) -> list[dict[str, Any]]:
    return [r for r in resources if r.get("resourceType") == resource_type and _subject_is(r, aliases)]


def _medication_definitions(resources: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medication resources sent beside the requests (``search.mode: include``), by "Medication/<id>"."""
    return {f"Medication/{r['id']}": r for r in resources
            if r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)}


def facts_from_resources(
    resources: Iterable[dict[str, Any]],
    *,
    patient_id: str,
    now: datetime,
    options: MappingOptions | None = None,
    patient_aliases: Iterable[str] = (),
    unavailable: Iterable[str] = (),
) -> PatientFacts:
    """``patient_aliases``: other references that denote this Patient, e.g. its ``urn:uuid:`` fullUrl in a Bundle.
    ``unavailable``: prefetch keys whose data could not be obtained (their rules then say "unknown")."""
    pool = list(resources)
    patients = [r for r in pool if r.get("resourceType") == "Patient"]
    patient = next((p for p in patients if p.get("id") == patient_id), None)
    if patients and patient is None:
        # Prefetch must be about context.patientId; cards about another patient would be dangerous.
        raise BadRequest("the prefetched Patient is not context.patientId", expression=["prefetch.patient"])
    aliases = frozenset({f"Patient/{patient_id}", *patient_aliases})
    return build_facts(
        patient=patient,
        observations=_of_type(pool, "Observation", aliases),
        conditions=_of_type(pool, "Condition", aliases),
        medications=_of_type(pool, "MedicationRequest", aliases),
        procedures=_of_type(pool, "Procedure", aliases),
        now=now,
        options=options or MappingOptions(),
        medication_definitions=_medication_definitions(pool),
        unavailable=unavailable,
    )


def assess_resources(
    resources: Iterable[dict[str, Any]],
    *,
    patient_id: str,
    now: datetime,
    options: MappingOptions | None = None,
    patient_aliases: Iterable[str] = (),
) -> tuple[PatientFacts, Assessment]:
    facts = facts_from_resources(
        resources, patient_id=patient_id, now=now, options=options, patient_aliases=patient_aliases
    )
    return facts, assess(facts)


def assess_hook_call(call: HookCall, options: MappingOptions | None = None) -> HookOutcome:
    patient_id = str(call.context["patientId"])
    resources = [r for key in call.data.keys for r in call.data.resources(key)]
    # A key whose data could not be obtained (an error OperationOutcome and no fallback) is unknown, not empty.
    unavailable = [key for key, data in call.data.keys.items() if not data.obtained]
    facts = facts_from_resources(resources, patient_id=patient_id, now=call.now, options=options,
                                 unavailable=unavailable)
    assessment = assess(facts)
    cards = render_cards(assessment, facts, locale=call.locale, seed=call.request.hookInstance)
    return HookOutcome(
        response=CdsResponse(cards=cards),
        rules_fired=assessment.rules_fired,
        facts_used=[item.to_dict() for item in assessment.evidence()],
        ruleset_version=assessment.ruleset_version,
        ruleset_hash=assessment.ruleset_hash,
        snapshot=assessment_snapshot(assessment, facts) if not assessment.silent else None,
    )
