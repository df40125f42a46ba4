"""The clinical assessment: a pure function from ``PatientFacts`` to what the cards will say.

Implements brief §5c (additive subtype scoring with the metabolic gate P1 and the exclusion gate P2),
§5d (red flags), §5b (missing work-up), §6 (therapy options by subtype and extent, with the S-rule
cautions and rule C8), and the product rules C1-C9 of §5e. No I/O, no clock: ``facts.now`` is the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from fhir_mappings.facts import PatientFacts
from fhir_mappings.terminology import lookup
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, Result, condition_evidence, finding_evidence, lab_evidence
from hooks.engine.knowledge import SUBTYPES, ActionVariant, Knowledge, RuleDefinition, load_knowledge
from hooks.engine.predicates import evaluate, risk_factor_results
from hooks.engine.therapy import CautionHit, TherapyPlan, plan_therapy
from hooks.engine.workup import WorkupPlan, missing_items, plan_workup

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
    # "suspected": a critical flag that holds only on suspected evidence, shown as a warning (issue 11).
    basis: str | None = None
    # Index of the flag's action variant that fits this patient (a mechanical valve: do not stop warfarin).
    action_variant: int | None = None


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
    workup: WorkupPlan = field(default_factory=lambda: WorkupPlan(()))
    # Critical values older than the look-back window: history, "not current" (issue 10).
    history: tuple[Evidence, ...] = ()
    # What a rule needed but the record does not say: "birth-date", "medications" (never assumed).
    unknowns: tuple[str, ...] = ()
    deceased: bool = False
    # (issue kind, concept or None, count, an example code): data that was sent but not used, for the card.
    not_used: tuple[tuple[str, str | None, int, str | None], ...] = ()

    @property
    def calcinosis_present(self) -> bool:
        return bool(self.calcinosis)

    @property
    def silent(self) -> bool:
        return self.deceased or not (self.calcinosis_present or self.flags or self.risks)

    @property
    def rules_fired(self) -> list[str]:
        fired = [h.rule.id for h in self.hits]
        fired += [f"flag:{f.id}" for f in self.flags]
        fired += [f"risk:{r.id}" for r in self.risks]
        if self.therapy:
            fired += [f"caution:{c.caution_id}" for c in self.therapy.cautions]
        return list(dict.fromkeys(fired))

    def evidence(self) -> list[Evidence]:
        """Every distinct input any fired rule, flag or caution used (for the audit record)."""
        seen: dict[tuple[str, str, str | None, str | None], Evidence] = {}
        groups: list[tuple[Evidence, ...]] = [self.calcinosis]
        groups += [h.evidence for h in self.hits] + [f.evidence for f in self.flags + self.risks]
        if self.therapy:
            groups += [c.evidence for c in self.therapy.cautions]
            groups.append(tuple(u.evidence for u in (*self.therapy.current, *self.therapy.tried)))
        groups.append(self.history)
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
    missing_for_idiopathic = missing_items(ctx, ("calcium", "phosphate", "albumin", "renal-function", "pth",
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
    flags: list[FlagHit] = []
    unknowns: list[str] = []
    for flag in knowledge.flags:
        if flag.requires_calcinosis and not calcinosis_cutis:
            continue
        missing = [kind for kind in flag.needs if kind in facts.unavailable]
        if missing:
            unknowns.extend(f"{flag.id}:{kind}" for kind in missing)
            continue
        raised = _flag_hit(flag.id, flag.indicator, flag.when, ctx)
        if raised is not None:
            raised = _with_action_variant(raised, flag.action_variants, ctx)
            flags.append(raised)
            ctx.flags[flag.id] = Result(True, raised.evidence)
    risks: list[FlagHit] = []
    if not calcinosis:
        major, minor = risk_factor_results(ctx)
        for risk in knowledge.risks:
            result = evaluate(risk.when, ctx)
            if result:
                factors = tuple(name for name, _ in major + minor) if risk.id == "calciphylaxis-risk-profile" else ()
                risks.append(FlagHit(risk.id, "info", result.evidence, is_risk=True, risk_factors=factors))
        # One concise card: the first matching risk profile, and none when a critical flag tells the story.
        risks = [] if any(f.indicator == "critical" for f in flags) else risks[:1]
        # Only the risk card shown replaces its flag (a dropped risk card must not hide the flag).
        replaced = {r.replaces_flag for r in knowledge.risks if any(h.id == r.id for h in risks)}
        flags = [f for f in flags if f.id not in replaced]

    workup_plan = WorkupPlan(())
    therapy = None
    if calcinosis:
        focus = {subtype} if subtype != "indeterminate" else {s for s, _ in differential[:2]}
        workup_plan = plan_workup(ctx, focus)
        # An unclear subtype still gets the options that hold for every subtype (replace ceftriaxone in a
        # neonate on IV calcium, review a DOAC with a mechanical valve): they are about the patient, not the lesion.
        extent = _extent(facts)
        indication = extent == "disseminated" or bool(evaluate({"symptomatic": True}, ctx))
        therapy = plan_therapy(ctx, subtype, extent, indication)
    if facts.birth_date is None:
        unknowns.append("birth-date")
    if "medications" in facts.unavailable:
        unknowns.append("medications")
    phosphate = facts.latest("phosphate")
    if calcinosis and phosphate is not None and "no-range-for-age" in phosphate.flags:
        unknowns.append("phosphate-range-for-age")

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
        missing_workup=workup_plan.missing,
        therapy=therapy,
        ruleset_version=knowledge.version,
        ruleset_hash=knowledge.content_hash,
        unusable=_summarise_issues(facts),
        workup=workup_plan,
        history=_history(ctx),
        unknowns=tuple(dict.fromkeys(unknowns)),
        deceased=facts.deceased,
        not_used=_not_used(facts),
    )


def _flag_hit(flag_id: str, indicator: str, when: dict[str, Any], ctx: EvalContext) -> FlagHit | None:
    """A critical flag stands only on asserted evidence; on suspected evidence alone it is a warning."""
    if indicator != "critical":
        result = evaluate(when, ctx)
        return FlagHit(flag_id, indicator, result.evidence) if result else None
    ctx.confirmed_only = True
    try:
        confirmed = evaluate(when, ctx)
    finally:
        ctx.confirmed_only = False
    if confirmed:
        return FlagHit(flag_id, "critical", confirmed.evidence)
    relaxed = evaluate(when, ctx)
    return FlagHit(flag_id, "warning", relaxed.evidence, basis="suspected") if relaxed else None


def _with_action_variant(hit: FlagHit, variants: list[ActionVariant], ctx: EvalContext) -> FlagHit:
    for index, variant in enumerate(variants):
        result = evaluate(variant.when, ctx)
        if result:
            # The fact that changed the advice is named right after the lesion (issue 10: say what changed it).
            evidence = hit.evidence[:1] + result.evidence + hit.evidence[1:]
            return replace(hit, action_variant=index, evidence=evidence)
    return hit


def _history(ctx: EvalContext) -> tuple[Evidence, ...]:
    """For each history alert, the newest value past its threshold drawn before the look-back window."""
    found = []
    for alert in ctx.knowledge.history_alerts:
        series = ctx.facts.labs.get(alert.analyte)
        if series is None or series.window_start is None:
            continue
        limit, start = ctx.knowledge.threshold(alert.at_least), series.window_start
        old = [v for v in series.history if v.value is not None and v.comparator is None and v.value >= limit
               and v.effective is not None and v.effective < start]
        if old:
            item = lab_evidence(max(old, key=lambda v: v.effective or start))
            found.append(replace(item, flags=(*item.flags, "not-current")))
    return tuple(found)


# Issue kinds a clinician should hear about (the others are reported in the full assessment only).
_REPORTED_ISSUES = ("unknown-unit", "missing-unit", "unusable-value", "unverified-lab-code", "malformed-resource",
                    "panel-members-not-sent", "unresolved-medication")


def _not_used(facts: PatientFacts) -> tuple[tuple[str, str | None, int, str | None], ...]:
    """Counts of data sent but not used, per kind and concept, with an example code."""
    counts: dict[tuple[str, str | None], list[str | None]] = {}
    for issue in facts.issues:
        if issue.kind not in _REPORTED_ISSUES:
            continue
        provenance = issue.provenance
        match = lookup(provenance.system, provenance.code) if provenance and provenance.system else None
        concept = match.concept_id if match else None
        counts.setdefault((issue.kind, concept), []).append(provenance.code if provenance else None)
    return tuple((kind, concept, len(codes), next((c for c in codes if c), None))
                 for (kind, concept), codes in counts.items())


def _summarise_issues(facts: PatientFacts) -> tuple[str, ...]:
    """One line per kind of unusable data, with a count and the first example (FDA 'knowns/unknowns')."""
    first: dict[str, str] = {}
    counts: dict[str, int] = {}
    for issue in facts.issues:
        first.setdefault(issue.kind, issue.detail)
        counts[issue.kind] = counts.get(issue.kind, 0) + 1
    return tuple(f"{kind} ×{counts[kind]} (e.g. {detail})" for kind, detail in first.items())
