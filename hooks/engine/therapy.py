"""Therapy options fitted to this patient: subtype, extent, indication, current and past drugs, cautions.

Implements the brief §6 (options by subtype and extent), §6f and §9.1 (cautions S1-S20), rule C8 (a
contraindicating caution removes the option and lists it under cautions with its reason), rule C4 (cautions
at most `warning`), seed 000 (no indication, no treatment: observation), and the safety addendum S21-S36
(interactions, pregnancy, paediatric use, valves, hypoparathyroidism, primary HPT, sarcoidosis, malignancy,
sodium thiosulfate dosing, renal estimates). Pure: the plan depends only on the facts and the knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhir_mappings.facts import MedicationFact
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, medication_evidence
from hooks.engine.knowledge import SUBTYPES, CautionLevel, TherapyOption
from hooks.engine.predicates import evaluate

__all__ = ["CautionHit", "DrugUse", "TherapyPlan", "plan_therapy"]


@dataclass(frozen=True, slots=True)
class CautionHit:
    caution_id: str
    option: str
    reason: str
    contraindicates: bool
    current_medication: bool
    evidence: tuple[Evidence, ...]
    level: CautionLevel = "caution"
    warns: bool = False


@dataclass(frozen=True, slots=True)
class DrugUse:
    """A drug option the patient already takes (``since``) or took and stopped (``stopped``)."""

    option: str
    medication: str
    since: datetime | None
    stopped: datetime | None
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class TherapyPlan:
    subtype: str
    extent: str
    # New suggestions, preferred first: never a drug the patient takes or has stopped.
    options: tuple[str, ...]
    cautions: tuple[CautionHit, ...]
    # An indication to treat (pain, ulcer, infection, functional impairment, or disseminated lesions).
    indication: bool = True
    current: tuple[DrugUse, ...] = ()
    tried: tuple[DrugUse, ...] = ()
    # Option id -> index of the patient-specific text used (``variants`` in therapy.yaml).
    variants: tuple[tuple[str, int], ...] = ()
    # Data the plan needed but could not read ("medications": interactions were not checked).
    unknowns: tuple[str, ...] = ()
    # Option id -> the recorded conditions that made a "treat the underlying cause" option apply (issue 10:
    # the card names the cause found: "multiple myeloma", "adenocarcinoma").
    causes: tuple[tuple[str, tuple[Evidence, ...]], ...] = ()

    @property
    def touches_current_medication(self) -> bool:
        """A caution is about a drug the patient takes now, or is one shown as a warning (S27): the card warns."""
        taking = {use.option for use in self.current}
        return any(c.current_medication or c.option in taking or c.warns for c in self.cautions)

    def variant(self, option_id: str) -> int | None:
        return dict(self.variants).get(option_id)

    def causes_of(self, option_id: str) -> tuple[Evidence, ...]:
        return dict(self.causes).get(option_id, ())


def _matches(option: TherapyOption, medication: MedicationFact) -> bool:
    wanted = set(option.drugs)
    return medication.concept in wanted or bool(wanted.intersection(medication.groups))


def _uses(option: TherapyOption, ctx: EvalContext) -> tuple[DrugUse | None, DrugUse | None]:
    """The current use of the option's drug (if any), else its most recent past use."""
    if option.kind != "drug" or not option.drugs:
        return None, None
    related = [m for m in ctx.facts.medications if _matches(option, m)]
    current = [m for m in related if m.is_current]
    if current:
        first = min(current, key=lambda m: m.period_start or m.authored or ctx.facts.now)
        since = first.period_start or first.authored
        return DrugUse(option.id, first.concept, since, None, medication_evidence(first)), None
    past = [m for m in related if m.ended is not None]
    if past:
        last = max(past, key=lambda m: m.ended or ctx.facts.now)
        return None, DrugUse(option.id, last.concept, None, last.ended, medication_evidence(last))
    return None, None


def _names_current(evidence: tuple[Evidence, ...]) -> bool:
    """The caution rests on a drug the patient takes now (then the therapy card is a warning)."""
    return any(e.kind == "medication" and {"active", "on-hold"}.intersection(e.flags) for e in evidence)


def plan_therapy(ctx: EvalContext, subtype: str, extent: str, indication: bool) -> TherapyPlan:
    """Options for this subtype and patient; for an ``indeterminate`` subtype only those valid for every subtype."""
    knowledge = ctx.knowledge
    every_subtype = set(SUBTYPES)
    candidates: list[TherapyOption] = []
    causes: list[tuple[str, tuple[Evidence, ...]]] = []
    for option in knowledge.options:
        if not ((subtype in option.subtypes if subtype != "indeterminate" else every_subtype <= set(option.subtypes))
                and (option.extent == "any" or extent == "unknown" or option.extent == extent)
                and (indication or not option.needs_indication)
                and not (indication and subtype in option.only_without_indication_in)):
            continue
        required = evaluate(option.requires, ctx) if option.requires is not None else None
        if required is not None and not required:
            continue
        candidates.append(option)
        if required is not None and option.group == "underlying-cause":
            found = tuple(dict.fromkeys(e for e in required.evidence if e.kind == "condition"))
            if found:
                causes.append((option.id, found))
    current: list[DrugUse] = []
    tried: list[DrugUse] = []
    new: list[TherapyOption] = []
    for option in candidates:
        now_taking, taken = _uses(option, ctx)
        if now_taking is not None:
            current.append(now_taking)
        elif taken is not None:
            tried.append(taken)
        else:
            new.append(option)
    ctx.offered = frozenset(o.id for o in new)
    # Cautions concern what is suggested and what the patient already takes (colchicine with a new macrolide).
    concerned = ctx.offered | {use.option for use in current}
    cautions = [
        CautionHit(c.id, option, c.reason, c.contraindicates, c.current_medication or _names_current(result.evidence),
                   result.evidence, c.level, c.warns)
        for c in knowledge.cautions
        for option in c.applies_to
        if option in concerned and (result := evaluate(c.when, ctx))
    ]
    contraindicated = {c.option for c in cautions if c.contraindicates}

    def rank(option: TherapyOption) -> int:
        if not indication and option.rank_without_indication is not None:
            return option.rank_without_indication
        return option.rank

    offered = [o for o in sorted(new, key=rank) if o.id not in contraindicated]
    variants = []
    for option in [*offered, *(o for o in candidates if o.id in {u.option for u in current})]:
        index = next((i for i, v in enumerate(option.variants) if evaluate(v.when, ctx)), None)
        if index is not None:
            variants.append((option.id, index))
    unknowns = tuple(kind for kind in ("medications",) if kind in ctx.facts.unavailable)
    return TherapyPlan(
        subtype=subtype,
        extent=extent,
        options=tuple(o.id for o in offered),
        cautions=tuple(cautions),
        indication=indication,
        current=tuple(current),
        tried=tuple(tried),
        variants=tuple(variants),
        unknowns=unknowns,
        causes=tuple(causes),
    )
