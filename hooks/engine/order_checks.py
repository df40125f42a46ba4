"""The order checks of issue 15: each draft drug order against the patient's facts and current medications.

Pure: the findings depend only on the facts (built once per call), the patient-view assessment of the same
facts (its rules and red flags: "calciphylaxis suspected" means here what it means on the chart card), the
draft orders and the knowledge in ``order_checks.yaml``. A check that needs a fact that is not recorded
gives a "not recorded" finding naming it; it never assumes the safe value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fhir_mappings.draft_orders import DraftOrder
from fhir_mappings.facts import MedicationFact, PatientFacts
from hooks.engine.assessment import Assessment
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, Result, medication_evidence
from hooks.engine.order_knowledge import Alternative, OrderCheck, OrderKnowledge, UnknownFact
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
    # Set when the check could not be made: every fact that is not recorded ("pregnancy", "renal-function"),
    # with this check's words for it.
    unknown: tuple[UnknownFact, ...] = ()
    variant: int | None = None
    alternative: Alternative | None = None
    suggest_delete: bool = True
    # The patient predicate holds but no `with` drug is recorded (check.without_partner gives the words).
    without_partner: bool = False
    # The `with` drug (or the draft) must be IV and its route is not recorded: counted, and the card says so.
    route_unknown: bool = False

    @property
    def unknown_fact(self) -> str | None:
        """The first missing fact (the card extension's ``notRecorded``)."""
        return self.unknown[0].fact if self.unknown else None

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
                    flags=("draft",), route=medication.route, form=medication.text)


def _shown(evidence: Sequence[Evidence]) -> tuple[Evidence, ...]:
    """Each fact once, and no empty line for a fact that is missing (an unknown age has no value to show)."""
    kept = [e for e in evidence if not (e.kind == "demographic" and not e.text)]
    return tuple(dict.fromkeys(kept))


class _Checker:
    def __init__(self, facts: PatientFacts, ctx: EvalContext, knowledge: OrderKnowledge,
                 unchecked_drafts: Sequence[DraftOrder]) -> None:
        self.facts = facts
        self.ctx = ctx
        self.k = knowledge
        self.unchecked = unchecked_drafts

    def route_allows(self, medication: MedicationFact, route: str | None) -> bool:
        """An order recorded as oral is not an IV product (brief §9.2: calcium-containing IV solutions)."""
        return route is None or self.k.knowledge.route_of(medication.route, medication.text) != "oral"

    def is_with_drug(self, check: OrderCheck, medication: MedicationFact) -> bool:
        assert check.with_ is not None
        return _matches(medication, check.with_.concepts) and self.route_allows(medication, check.with_.route)

    def is_excepted(self, check: OrderCheck, drug: MedicationFact) -> bool:
        excepted = check.except_
        return excepted is not None and _matches(drug, excepted.concepts) and self.route_allows(drug, excepted.route)

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
        route = None if reversed_ else check.with_.route  # the ceftriaxone partner has no route condition
        found = [m for m in self.current(concepts, days, draft) if self.route_allows(m, route)]
        if found:
            return found[0], False
        # A draft of the `order` drug that is itself checked fires its own card: the reverse is not repeated.
        others = [m for m in self.drafted(concepts, self.unchecked if reversed_ else all_drafts, draft)
                  if self.route_allows(m, route)]
        return (others[0], True) if others else (None, False)

    def without_own_class(self, check: OrderCheck, drug: MedicationFact) -> EvalContext:
        """The context without current orders of the drafted drug's classes (addendum S29, review of issue 15:
        renewing a binder must not count that binder as the calciphylaxis risk factor)."""
        own = {drug.concept, *(g for g in drug.groups if g in check.order)}
        kept = tuple(m for m in self.facts.medications if not (own & {m.concept, *m.groups}))
        return replace(self.ctx, facts=replace(self.facts, medications=kept), gates={})

    def unknowns(self, check: OrderCheck, ctx: EvalContext, partner_missing: bool) -> tuple[list[UnknownFact],
                                                                                             list[Evidence]]:
        """The missing facts to name; with no `with` drug on record, only those that need none (and the
        medications, whose absence may be why no partner was found)."""
        facts: list[UnknownFact] = []
        evidence: list[Evidence] = []
        for fact in check.unknown:
            if partner_missing and fact.needs_partner and fact.fact != "medications":
                continue
            result = evaluate(fact.when, ctx)
            if result:
                facts.append(fact)
                evidence.extend(result.evidence)
        return facts, evidence

    def run(self, check: OrderCheck, draft: DraftOrder, drug: MedicationFact,
            all_drafts: Sequence[DraftOrder]) -> OrderFinding | None:
        direct = _matches(drug, check.order) and not self.is_excepted(check, drug)
        reversed_ = (not direct and check.either_order and check.with_ is not None
                     and self.is_with_drug(check, drug))
        if not (direct or reversed_):
            return None
        ctx = self.without_own_class(check, drug) if check.discount_own_class else self.ctx
        partner: MedicationFact | None = None
        partner_evidence: tuple[Evidence, ...] = ()
        needs_partner = check.duplicate or check.with_ is not None
        if needs_partner:
            partner, is_draft = self.partner(check, drug, draft, reversed_, all_drafts)
            if partner is not None:
                partner_evidence = (_draft_evidence(partner) if is_draft else medication_evidence(partner),)
        iv = check.with_ is not None and check.with_.route == "intravenous"
        with_drug = drug if reversed_ else partner
        route_unknown = (iv and with_drug is not None
                         and self.k.knowledge.route_of(with_drug.route, with_drug.text) is None)
        holds = Result(True) if check.when is None else evaluate(check.when, ctx)
        if holds and (partner is not None or not needs_partner):
            return self._fired(check, ctx, draft, drug, partner, reversed_,
                               (*partner_evidence, *holds.evidence), route_unknown)
        missing, evidence = self.unknowns(check, ctx, needs_partner and partner is None)
        if missing:
            indicator = min((f.indicator for f in missing), key=lambda i: _INDICATOR_ORDER[i])
            return OrderFinding(check, indicator, draft, drug, partner, reversed_,
                                _shown((*partner_evidence, *evidence)), unknown=tuple(missing), suggest_delete=False)
        if holds and check.without_partner is not None and not reversed_:
            return OrderFinding(check, check.without_partner.indicator, draft, drug, None, False,
                                _shown(holds.evidence), without_partner=True, suggest_delete=False)
        return None

    def alternative_for(self, check: OrderCheck, ctx: EvalContext, draft: DraftOrder,
                        drug: MedicationFact) -> Alternative | None:
        alternative = check.alternative
        if alternative is None:
            return None
        if alternative.for_order and not _matches(drug, alternative.for_order):
            return None
        # A combination product (aspirin with calcium carbonate) or a draft of several ingredients: replacing it
        # would also remove the other ingredients (review of issue 15, finding 3).
        if "combination_product" in drug.groups or len(draft.medications) > 1:
            return None
        if alternative.when is not None and not evaluate(alternative.when, ctx):
            return None
        for medication in self.facts.medications:
            if medication.is_current and (medication.concept == alternative.concept
                                          or _matches(medication, alternative.unless_current)):
                return None  # already taken, or a drug of the same class: replacing by it would be a duplicate
        return alternative

    def _fired(self, check: OrderCheck, ctx: EvalContext, draft: DraftOrder, drug: MedicationFact,
               partner: MedicationFact | None, reversed_: bool, evidence: tuple[Evidence, ...],
               route_unknown: bool) -> OrderFinding:
        variant: int | None = None
        for index, candidate in enumerate(check.variants):
            if candidate.for_order and not _matches(drug, candidate.for_order):
                continue
            result = evaluate(candidate.when, ctx)
            if result:
                # What changed the advice comes first among the facts (the valve, hypoparathyroidism).
                variant, evidence = index, (*result.evidence, *evidence)
                break
        chosen = check.variants[variant] if variant is not None else None
        alternative = (self.alternative_for(check, ctx, draft, drug)
                       if not reversed_ and (chosen is None or chosen.alternative) else None)
        # The variant's choice, else the check's (`delete_reversed` for a card on the `with` drug).
        own = check.delete_reversed if reversed_ else chosen.suggest_delete if chosen is not None else None
        delete = check.suggest_delete if own is None else own
        return OrderFinding(check, check.indicator, draft, drug, partner, reversed_, _shown(evidence),
                            variant=variant, alternative=alternative,
                            suggest_delete=delete and draft.reference is not None, route_unknown=route_unknown)


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
                if finding.unknown:
                    fresh = tuple(f for f in finding.unknown if (f.fact, index) not in unknowns)
                    if not fresh:
                        continue
                    unknowns.update((f.fact, index) for f in fresh)
                    finding = replace(finding, unknown=fresh)
                findings[(check.id, index)] = finding
    return sorted(findings.values(), key=lambda f: _INDICATOR_ORDER.get(f.indicator, 3))
