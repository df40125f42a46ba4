"""The clinical assessment: a pure function from ``PatientFacts`` to what the cards will say.

Implements brief §5c (additive subtype scoring with the metabolic gate P1 and the exclusion gate P2),
§5d (red flags), §5b (missing work-up), §6 (therapy options by subtype and extent, with the S-rule
cautions and rule C8), and the product rules C1-C9 of §5e. No I/O, no clock: ``facts.now`` is the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_mappings.facts import PatientFacts
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, Result, condition_evidence, finding_evidence
from hooks.engine.knowledge import SUBTYPES, Knowledge, RuleDefinition, load_knowledge
from hooks.engine.predicates import evaluate, risk_factor_results

__all__ = ["Assessment", "CautionHit", "FlagHit", "RuleHit", "TherapyPlan", "assess"]

_METABOLIC_SUBTYPES = frozenset({"metastatic", "calciphylaxis"})
_UNIVERSALIS_WORDS = ("universal", "diffus", "dissemin", "dissémin", "étendue", "extensive")


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: RuleDefinition
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True, slots=True)
class FlagHit:
    id: str
    indicator: str
    evidence: tuple[Evidence, ...]
    is_risk: bool = False
    risk_factors: tuple[str, ...] = ()




@dataclass(frozen=True, slots=True)
class CautionHit:
    caution_id: str
    option: str
    reason: str
    contraindicates: bool
    current_medication: bool
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True, slots=True)
class TherapyPlan:
    subtype: str
    extent: str
    options: tuple[str, ...]
    cautions: tuple[CautionHit, ...]

    @property
    def touches_current_medication(self) -> bool:
        return any(c.current_medication for c in self.cautions)


@dataclass(frozen=True, slots=True)
class Assessment:
    calcinosis: tuple[Evidence, ...]
    scores: dict[str, int]
    differential: tuple[tuple[str, int], ...]
    subtype: str
    hits: tuple[RuleHit, ...]
    metabolic: Result
    workup_complete: Result
    missing_for_idiopathic: tuple[str, ...]
    calciphylaxis_kept: bool
    flags: tuple[FlagHit, ...]
    risks: tuple[FlagHit, ...]
    missing_workup: tuple[str, ...]
    therapy: TherapyPlan | None
    ruleset_version: str
    ruleset_hash: str
    unusable: tuple[str, ...] = field(default=())

    @property
    def calcinosis_present(self) -> bool:
        return bool(self.calcinosis)

    @property
    def silent(self) -> bool:
        return not (self.calcinosis_present or self.flags or self.risks)

    @property
    def rules_fired(self) -> list[str]:
        fired = [h.rule.id for h in self.hits]
        fired += [f"flag:{f.id}" for f in self.flags]
        fired += [f"risk:{r.id}" for r in self.risks]
        if self.therapy:
            fired += [f"caution:{c.caution_id}" for c in self.therapy.cautions]
        return fired

    def evidence(self) -> list[Evidence]:
        """Every distinct input any fired rule, flag or caution used (for the audit record)."""
        seen: dict[tuple[str, str, str | None, str | None], Evidence] = {}
        groups: list[tuple[Evidence, ...]] = [self.calcinosis]
        groups += [h.evidence for h in self.hits] + [f.evidence for f in self.flags + self.risks]
        if self.therapy:
            groups += [c.evidence for c in self.therapy.cautions]
        for group in groups:
            for item in group:
                seen.setdefault((item.kind, item.concept, item.reference, item.text), item)
        return list(seen.values())


def _calcinosis(facts: PatientFacts) -> tuple[Evidence, ...]:
    """P0: a calcinosis-cutis finding (coded, or conservative text match), or a calciphylaxis diagnosis."""
    skin = facts.skin
    findings = (*skin.calcinosis, *skin.calciphylaxis, *skin.biopsy_calciphylaxis)
    evidence = [finding_evidence(f) for f in findings]
    evidence += [condition_evidence(c) for c in facts.active_conditions("calcinosis_cutis", "calciphylaxis")]
    # A coded Condition is both a skin finding and a condition: show each source resource once.
    unique: dict[str, Evidence] = {}
    for item in evidence:
        unique.setdefault(item.reference or f"{item.kind}:{item.concept}:{item.text}", item)
    return tuple(unique.values())


def _extent(facts: PatientFacts) -> str:
    texts = " ".join((f.matched_text or "") for f in facts.skin.calcinosis).lower()
    if any(word in texts for word in _UNIVERSALIS_WORDS) or len(facts.skin.lesion_sites) >= 3:
        return "disseminated"
    return "localized" if facts.skin.lesion_sites else "unknown"


def _suggest(
    scores: dict[str, int], knowledge: Knowledge, blocked: set[str]
) -> tuple[str, tuple[tuple[str, int], ...]]:
    # Ties keep the brief's subtype order, so the differential is deterministic.
    ranked = tuple(sorted(((s, scores[s]) for s in SUBTYPES), key=lambda item: -item[1]))
    (leader, top), (_, second) = ranked[0], ranked[1]
    if leader not in blocked and top >= knowledge.min_score and top - second >= knowledge.min_lead:
        return leader, ranked
    return "indeterminate", ranked


def assess(facts: PatientFacts, knowledge: Knowledge | None = None) -> Assessment:
    knowledge = knowledge or load_knowledge()
    ctx = EvalContext(facts=facts, knowledge=knowledge)
    calcinosis = _calcinosis(facts)

    hits: list[RuleHit] = []
    for rule in knowledge.rules:
        ctx.rule_groups[rule.id] = rule.group
        result = evaluate(rule.when, ctx)
        ctx.rules[rule.id] = result
        if result:
            hits.append(RuleHit(rule, result.evidence))

    metabolic = evaluate({"gate": "metabolic_abnormality"}, ctx)
    workup = evaluate({"gate": "workup_complete"}, ctx)
    missing_for_idiopathic = _missing_items(ctx, ("calcium", "phosphate", "albumin", "renal-function", "pth",
                                                  "vitamin-d-25", "lupus-serology"))

    scores = dict.fromkeys(SUBTYPES, 0)
    for hit in hits:
        for subtype, points in hit.rule.points.items():
            scores[subtype] += points
    blocked: set[str] = set()
    if metabolic:
        # P1: a metabolic abnormality caps dystrophic at "possible" (mixed picture) and excludes idiopathic.
        blocked |= {"dystrophic", "idiopathic"}
    if not workup:
        blocked.add("idiopathic")
    subtype, differential = _suggest(scores, knowledge, blocked) if calcinosis else ("indeterminate", ())
    if not calcinosis:
        differential = tuple(sorted(scores.items(), key=lambda item: -item[1]))
    renal = ctx.rules.get("R14") or ctx.rules.get("R15") or ctx.rules.get("R16")
    calciphylaxis_kept = bool(ctx.rules.get("R31")) and bool(renal)

    # Flags about calcinosis lesions (ulcer, joint destruction) need calcinosis cutis itself, not only a
    # calciphylaxis diagnosis, which has its own critical flags.
    calcinosis_cutis = bool(facts.skin.calcinosis or facts.active_conditions("calcinosis_cutis"))
    flags = [
        FlagHit(flag.id, flag.indicator, result.evidence)
        for flag in knowledge.flags
        if (not flag.requires_calcinosis or calcinosis_cutis) and (result := evaluate(flag.when, ctx))
    ]
    risks: list[FlagHit] = []
    if not calcinosis:
        major, minor = risk_factor_results(ctx)
        for risk in knowledge.risks:
            result = evaluate(risk.when, ctx)
            if result:
                factors = tuple(name for name, _ in major + minor) if risk.id == "calciphylaxis-risk-profile" else ()
                risks.append(FlagHit(risk.id, "info", result.evidence, is_risk=True, risk_factors=factors))
                flags = [f for f in flags if f.id != risk.replaces_flag]
        # One concise card: the first matching risk profile, and none when a critical flag tells the story.
        risks = [] if any(f.indicator == "critical" for f in flags) else risks[:1]

    missing_workup: tuple[str, ...] = ()
    therapy = None
    if calcinosis:
        focus = {subtype} if subtype != "indeterminate" else {s for s, _ in differential[:2]}
        missing_workup = _missing_workup(ctx, focus)
        if subtype != "indeterminate":
            therapy = _therapy(ctx, subtype, _extent(facts))

    return Assessment(
        calcinosis=calcinosis,
        scores=scores,
        differential=differential,
        subtype=subtype,
        hits=tuple(hits),
        metabolic=metabolic,
        workup_complete=workup,
        missing_for_idiopathic=missing_for_idiopathic if not workup else (),
        calciphylaxis_kept=calciphylaxis_kept,
        flags=tuple(flags),
        risks=tuple(risks),
        missing_workup=missing_workup,
        therapy=therapy,
        ruleset_version=knowledge.version,
        ruleset_hash=knowledge.content_hash,
        unusable=_summarise_issues(facts),
    )


def _summarise_issues(facts: PatientFacts) -> tuple[str, ...]:
    """One line per kind of unusable data, with a count and the first example (FDA 'knowns/unknowns')."""
    first: dict[str, str] = {}
    counts: dict[str, int] = {}
    for issue in facts.issues:
        first.setdefault(issue.kind, issue.detail)
        counts[issue.kind] = counts.get(issue.kind, 0) + 1
    return tuple(f"{kind} ×{counts[kind]} (e.g. {detail})" for kind, detail in first.items())


def _satisfied(ctx: EvalContext, analytes: list[str]) -> bool:
    return any(ctx.facts.latest(a) is not None for a in analytes)


def _missing_items(ctx: EvalContext, item_ids: tuple[str, ...]) -> tuple[str, ...]:
    items = {i.id: i for i in ctx.knowledge.workup}
    return tuple(i for i in item_ids if not _satisfied(ctx, items[i].satisfied_by))


def _missing_workup(ctx: EvalContext, focus: set[str]) -> tuple[str, ...]:
    missing = []
    for item in ctx.knowledge.workup:
        relevant = "all" in item.subtypes or bool(focus.intersection(item.subtypes))
        if not relevant or _satisfied(ctx, item.satisfied_by):
            continue
        if item.needed_when is not None and not evaluate(item.needed_when, ctx):
            continue
        missing.append(item.id)
    return tuple(missing)


def _therapy(ctx: EvalContext, subtype: str, extent: str) -> TherapyPlan:
    knowledge = ctx.knowledge
    candidates = [
        option
        for option in knowledge.options
        if subtype in option.subtypes
        and (option.extent == "any" or extent == "unknown" or option.extent == extent)
        and (option.requires is None or evaluate(option.requires, ctx))
    ]
    offered = {o.id for o in candidates}
    cautions = [
        CautionHit(c.id, c.option, c.reason, c.contraindicates, c.current_medication, result.evidence)
        for c in knowledge.cautions
        if c.option in offered and (result := evaluate(c.when, ctx))
    ]
    contraindicated = {c.option for c in cautions if c.contraindicates}
    options = tuple(o.id for o in sorted(candidates, key=lambda o: o.rank) if o.id not in contraindicated)
    return TherapyPlan(subtype=subtype, extent=extent, options=options, cautions=tuple(cautions))
