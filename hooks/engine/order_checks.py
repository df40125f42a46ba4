"""The order checks of issue 15: each draft drug order against the patient's facts and current medications.

Pure: the findings depend only on the facts (built once per call), the patient-view assessment of the same
facts (its rules and red flags: "calciphylaxis suspected" means here what it means on the chart card), the
draft orders and the knowledge in ``order_checks.yaml``. A check that needs a fact that is not recorded
gives a "not recorded" finding naming it; it never assumes the safe value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fhir_mappings.draft_orders import DraftOrder
from fhir_mappings.facts import MedicationFact, PatientFacts
from hooks.engine.assessment import Assessment
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, Result, medication_evidence
from hooks.engine.order_knowledge import Alternative, OrderCheck, OrderKnowledge
from hooks.engine.predicates import evaluate

__all__ = ["OrderFinding", "check_orders"]

_INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class OrderFinding:
    check: OrderCheck
    indicator: str
    draft: DraftOrder
    drug: MedicationFact
    # The other drug of an interaction or duplicate: a current order, or another draft of the same Bundle.
    partner: MedicationFact | None
    # The draft is the check's `with` drug (calcium ordered for a neonate already on ceftriaxone).
    reversed: bool
    evidence: tuple[Evidence, ...]
    # Set when the check could not be made: the fact that is not recorded ("pregnancy", "renal-function").
    unknown_fact: str | None = None
    variant: int | None = None
    alternative: Alternative | None = None
    suggest_delete: bool = True

    @property
    def order_concept(self) -> str:
        """The drug the check is about (the partner when the draft is the `with` drug)."""
        return self.partner.concept if self.reversed and self.partner else self.drug.concept


def _matches(medication: MedicationFact, concepts: Sequence[str]) -> bool:
    return medication.concept in concepts or any(g in concepts for g in medication.groups)


def _context(facts: PatientFacts, assessment: Assessment, knowledge: OrderKnowledge) -> EvalContext:
    """The predicates' context, with the rules and red flags the assessment raised on the same facts."""
    ctx = EvalContext(facts=facts, knowledge=knowledge.knowledge)
    for hit in assessment.hits:
        ctx.rules[hit.rule.id] = Result(True, hit.evidence)
        ctx.rule_groups[hit.rule.id] = hit.rule.group
    for flag in (*assessment.flags, *assessment.risks):
        ctx.flags[flag.id] = Result(True, flag.evidence)
    ctx.subtype = assessment.subtype
    return ctx


def _draft_evidence(medication: MedicationFact) -> Evidence:
    """Another order of this signing: named without a date (it is not given yet)."""
    return Evidence(kind="medication", concept=medication.concept, reference=medication.provenance.reference,
                    flags=("draft",))


class _Checker:
    def __init__(self, facts: PatientFacts, ctx: EvalContext, knowledge: OrderKnowledge,
                 unchecked_drafts: Sequence[DraftOrder]) -> None:
        self.facts = facts
        self.ctx = ctx
        self.k = knowledge
        self.unchecked = unchecked_drafts

    def current(self, concepts: Sequence[str], days: int, draft: DraftOrder) -> list[MedicationFact]:
        return [m for m in self.facts.medications
                if _matches(m, concepts) and m.is_within(self.facts.now, days)
                and m.provenance.reference != draft.reference]

    def drafted(self, concepts: Sequence[str], drafts: Sequence[DraftOrder], draft: DraftOrder) -> list[MedicationFact]:
        return [m for d in drafts if d is not draft and d.is_order for m in d.medications if _matches(m, concepts)]

    def partner(self, check: OrderCheck, drug: MedicationFact, draft: DraftOrder, reversed_: bool,
                all_drafts: Sequence[DraftOrder]) -> tuple[MedicationFact | None, bool]:
        """(the partner found, whether it is another draft)."""
        if check.duplicate:
            same = [m for m in self.facts.medications if m.is_current and m.provenance.reference != draft.reference
                    and (m.concept == drug.concept or set(m.groups) & set(drug.groups) & set(check.order))]
            return (same[0], False) if same else (None, False)
        assert check.with_ is not None
        concepts = check.order if reversed_ else check.with_.concepts
        days = int(self.k.knowledge.threshold(check.with_.within_days))
        found = self.current(concepts, days, draft)
        if found:
            return found[0], False
        # A draft of the `order` drug that is itself checked fires its own card: the reverse is not repeated.
        others = self.drafted(concepts, self.unchecked if reversed_ else all_drafts, draft)
        return (others[0], True) if others else (None, False)

    def unknown(self, check: OrderCheck) -> tuple[str, str, tuple[Evidence, ...]] | None:
        for fact in check.unknown:
            result = evaluate(fact.when, self.ctx)
            if result:
                return fact.fact, fact.indicator, result.evidence
        return None

    def run(self, check: OrderCheck, draft: DraftOrder, drug: MedicationFact,
            all_drafts: Sequence[DraftOrder]) -> OrderFinding | None:
        direct = _matches(drug, check.order)
        reversed_ = (not direct and check.either_order and check.with_ is not None
                     and _matches(drug, check.with_.concepts))
        if not (direct or reversed_):
            return None
        partner: MedicationFact | None = None
        partner_evidence: tuple[Evidence, ...] = ()
        needs_partner = check.duplicate or check.with_ is not None
        if needs_partner:
            partner, is_draft = self.partner(check, drug, draft, reversed_, all_drafts)
            if partner is not None:
                partner_evidence = (_draft_evidence(partner) if is_draft else medication_evidence(partner),)
        holds = Result(True) if check.when is None else evaluate(check.when, self.ctx)
        if holds and (partner is not None or not needs_partner):
            return self._fired(check, draft, drug, partner, reversed_, (*partner_evidence, *holds.evidence))
        missing = self.unknown(check)
        if missing is None or (needs_partner and partner is None and missing[0] != "medications"):
            return None
        fact, indicator, evidence = missing
        return OrderFinding(check, indicator, draft, drug, partner, reversed_, (*partner_evidence, *evidence),
                            unknown_fact=fact, suggest_delete=False)

    def _fired(self, check: OrderCheck, draft: DraftOrder, drug: MedicationFact, partner: MedicationFact | None,
               reversed_: bool, evidence: tuple[Evidence, ...]) -> OrderFinding:
        variant: int | None = None
        for index, candidate in enumerate(check.variants):
            result = evaluate(candidate.when, self.ctx)
            if result:
                # What changed the advice comes first among the facts (the valve, hypoparathyroidism).
                variant, evidence = index, (*result.evidence, *evidence)
                break
        chosen = check.variants[variant] if variant is not None else None
        alternative = check.alternative if not reversed_ and (chosen is None or chosen.alternative) else None
        if alternative is not None and alternative.for_order and not _matches(drug, alternative.for_order):
            alternative = None
        if alternative is not None and any(m.concept == alternative.concept and m.is_current
                                           for m in self.facts.medications):
            alternative = None  # already taken: replacing by it would be a duplicate
        delete = check.delete_reversed if reversed_ else (chosen.suggest_delete if chosen else True)
        return OrderFinding(check, check.indicator, draft, drug, partner, reversed_, evidence, variant=variant,
                            alternative=alternative, suggest_delete=delete and draft.reference is not None)


def check_orders(
    facts: PatientFacts,
    assessment: Assessment,
    to_check: Sequence[DraftOrder],
    all_drafts: Sequence[DraftOrder],
    knowledge: OrderKnowledge,
) -> list[OrderFinding]:
    """Findings for the drafts ``to_check`` (order-select: the selections; order-sign: every draft), most
    severe first. ``all_drafts`` are the other orders of this signing: an interaction with one counts."""
    ctx = _context(facts, assessment, knowledge)
    unchecked = [d for d in all_drafts if d not in to_check]
    checker = _Checker(facts, ctx, knowledge, unchecked)
    findings: dict[tuple[str, int], OrderFinding] = {}
    # One "not recorded" card per draft and missing fact (two checks may both need the medications).
    unknowns: set[tuple[str, int]] = set()
    for index, draft in enumerate(to_check):
        if not draft.is_order:
            continue
        for drug in draft.medications:
            for check in knowledge.checks:
                if (check.id, index) in findings:
                    continue
                finding = checker.run(check, draft, drug, all_drafts)
                if finding is None:
                    continue
                if finding.unknown_fact is not None:
                    if (finding.unknown_fact, index) in unknowns:
                        continue
                    unknowns.add((finding.unknown_fact, index))
                findings[(check.id, index)] = finding
    return sorted(findings.values(), key=lambda f: _INDICATOR_ORDER.get(f.indicator, 3))
