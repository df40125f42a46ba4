"""Procedures that tell the therapy rules something lasting: a valve replacement, a kidney transplant, dialysis.

Implements the safety addendum G-MHV ("an active Condition or a past Procedure": the mechanical valve
replacement procedures 699347000, 174929002, 431339008, 174937005, 174946004) and the dialysis and transplant
procedure codes of the clinical brief §2b. A completed or ongoing procedure becomes a condition fact of the
same concept: an implant or transplant stays; dialysis counts only when performed in the last 30 days
(product decision: ongoing treatment, not a past episode). Text is read like Condition text (issue 10).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from fhir_mappings._common import codings, match_codings, notes_text, parse_datetime, period_start, provenance_for
from fhir_mappings.context import context_conditions_from_text
from fhir_mappings.facts import ConditionFact
from fhir_mappings.models import Procedure

__all__ = ["read_procedure"]

_DONE: Final = frozenset({"completed", "in-progress"})
_RECENT_DIALYSIS_DAYS: Final = 30


def read_procedure(procedure: Procedure, now: datetime) -> list[ConditionFact]:
    if procedure.get("status") not in _DONE:
        return []
    performed = parse_datetime(procedure.get("performedDateTime")) or period_start(procedure.get("performedPeriod"))
    code = procedure.get("code") or {}
    resource_id = procedure.get("id")
    facts: dict[str, ConditionFact] = {}
    for coding, match in match_codings(codings(code)):
        if match.kind != "condition" or match.concept_id in facts:
            continue
        if match.concept_id == "dialysis" and (performed is None or (now - performed).days > _RECENT_DIALYSIS_DAYS):
            continue
        facts[match.concept_id] = ConditionFact(
            concept=match.concept_id,
            provenance=provenance_for("Procedure", resource_id, coding, match, code.get("text")),
            clinical_status="active",
            verification_status="confirmed",
            onset=performed,
            recorded=performed,
            text=code.get("text"),
        )
    named = context_conditions_from_text(
        [code.get("text") or "", notes_text(procedure.get("note", []))],
        resource_type="Procedure", resource_id=resource_id, coded=facts, clinical_status="active",
        verification_status="confirmed", onset=performed, recorded=performed,
    )
    # A procedure's own text names what was done, not something to rule out or a past state.
    return [*facts.values(), *(n for n in named if n.concept in {"mechanical_valve", "bioprosthetic_valve",
                                                                  "kidney_transplant"})]
