"""The predicate vocabulary of the knowledge files, evaluated on ``PatientFacts``.

Each predicate returns whether it holds and the evidence (facts with values, units, dates and source
references) that made it hold, so every card can show its basis (FDA non-device CDS criterion 4).
Only current values count (rule C1): the mapping layer puts values outside the look-back windows in
``history`` only, and ``PatientFacts.latest`` never returns them.

Vocabulary (one key per mapping; numbers may name a threshold of ruleset.yaml):

=============================  ==============================================================
``all`` / ``any`` / ``not``     combinators
``condition: [c...]``           an active, non-refuted condition of one of these concepts
``medication: {concepts, within_days}``  a drug (concept or class) current or stopped within N days
``medication_current: [c...]``  an active or on-hold order of one of these drugs or classes
``present: [a...]``             a current value of any of these analytes
``lab_high`` / ``lab_low``      the latest value is above / below its reference range
``lab_above`` / ``lab_below`` / ``lab_at_least: {analyte, value}``
``lab_uln_multiple: {analyte, factor}``  above factor x upper limit
``antibody_positive: [a...]``   a current positive antibody result
``calcium_high`` / ``calcium_low`` / ``calcium_at_least``  corrected (or, rule C2, measured) calcium
``ca_p_pth_normal``             calcium, phosphate and PTH current and in range (rule C3, R10)
``ca_x_p_high``                 Ca x P >= 70, or >= 55 in CKD G3-5D; adults only (rule C6)
``ca_x_p_at_least: t``          Ca x P >= t mg2/dL2
``ckd_at_least: G4``            KDIGO stage (dialysis counts as G5)
``dialysis: true``              on dialysis (coded, not superseded by a current eGFR)
``egfr_below: n``               current reported or computed eGFR below n
``crcl_below: n``               CrCl below n: reported, else Cockcroft-Gault, else eGFR (S36)
``skin: [kinds]``               a skin finding of one of these kinds (SkinFindings fields)
``symptomatic: true``           pain, ulcer, infection or joint destruction asserted at the lesions
``lesion_sites: [s...]``        a lesion at one of these sites
``lesion_sites_min: {sites, count}``  lesions at >= count of these sites
``lesions_only_in: [s...]``     lesions recorded, all within these sites
``age_below_years`` / ``age_above_years`` / ``age_below_days`` / ``age_at_most_days`` / ``adult``
``age_band: [neonate, child_under_8, child, adult, unknown]``  the band of safety addendum S28
``pregnancy`` / ``breastfeeding: [yes, no, unknown, not-applicable]``  status (G-PREG, G-BF)
``mechanical_valve: true``      a mechanical valve, or Z95.2 without a bioprosthesis shown (S26 f)
``valve: [kind...]``            the valve on record: mechanical (coded), unrecorded (Z95.2 alone), biological, none
``data_unknown: [kind...]``     the data of this kind ("medications") could not be read
``renal_function_unknown: true``  no CrCl, eGFR (CKD-EPI is adult-only) or coded CKD stage to judge by
``subtype: [s...]``             the suggested subtype is one of these (for flags, evaluated after scoring)
``condition_group: [g...]``     an active condition coded with a row of this group (``peritoneal``)
``renal_estimate: [method...]``  the estimate a CrCl threshold is checked on (egfr-approximation: no weight)
``rule: R31`` / ``rule_group: [g...]`` / ``gate: name`` / ``flag: id``  results evaluated earlier
``offered: [option...]``        one of these therapy options is offered (combination cautions)
``focus: [subtype...]``         the work-up is for one of these subtypes
``calciphylaxis_risk_factors: {major, or_major, with_minor}``  consensus 2023 counting
``always: true``
=============================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings.context import valve_kind
from fhir_mappings.facts import Finding, PatientFacts, StatusFact
from fhir_mappings.terminology import lookup
from hooks.engine.context import EvalContext
from hooks.engine.evidence import (
    FALSE,
    Evidence,
    Result,
    combine,
    condition_evidence,
    finding_evidence,
    medication_evidence,
    status_evidence,
)
from hooks.engine.predicates_labs import LAB_PREDICATES, Predicate

__all__ = ["KNOWN_PREDICATES", "UnknownPredicate", "evaluate", "risk_factor_results"]


class UnknownPredicate(ValueError):
    """A knowledge file uses a predicate this engine does not know (caught by the knowledge tests)."""


def evaluate(predicate: Mapping[str, Any], ctx: EvalContext) -> Result:
    if len(predicate) != 1:
        raise UnknownPredicate(f"a predicate has exactly one key, got {sorted(predicate)}")
    (name, argument), = predicate.items()
    handler = _PREDICATES.get(name)
    if handler is None:
        raise UnknownPredicate(name)
    return handler(argument, ctx)


def _all(argument: list[Mapping[str, Any]], ctx: EvalContext) -> Result:
    results = []
    for part in argument:
        result = evaluate(part, ctx)
        if not result:
            return FALSE
        results.append(result)
    return Result(True, combine(results))


def _any(argument: list[Mapping[str, Any]], ctx: EvalContext) -> Result:
    results = [r for r in (evaluate(part, ctx) for part in argument) if r]
    return Result(bool(results), combine(results))


def _not(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    return Result(not evaluate(argument, ctx))


def _condition(argument: list[str], ctx: EvalContext) -> Result:
    found = [c for c in ctx.facts.active_conditions(*argument)
             if not (ctx.confirmed_only and c.certainty == "suspected")]
    return Result(bool(found), tuple(condition_evidence(c) for c in found))


def _condition_group(argument: list[str], ctx: EvalContext) -> Result:
    """An active condition whose code row carries one of these groups (peritoneal dialysis among dialyses)."""
    wanted = set(argument)
    found = []
    for condition in ctx.facts.conditions:
        if not condition.is_active or (ctx.confirmed_only and condition.certainty == "suspected"):
            continue
        match = lookup(condition.provenance.system, condition.provenance.code)
        if match is not None and wanted.intersection(match.groups):
            found.append(condition)
    return Result(bool(found), tuple(condition_evidence(c) for c in found))


def _medication(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    found = ctx.facts.medications_within(int(ctx.knowledge.threshold(argument["within_days"])), *argument["concepts"])
    return Result(bool(found), tuple(medication_evidence(m) for m in found))


def _medication_current(argument: list[str], ctx: EvalContext) -> Result:
    """An active or on-hold order now (not one stopped last month)."""
    wanted = set(argument)
    found = [m for m in ctx.facts.medications
             if m.is_current and (m.concept in wanted or wanted.intersection(m.groups))]
    return Result(bool(found), tuple(medication_evidence(m) for m in found))


def _skin(argument: list[str], ctx: EvalContext) -> Result:
    findings = [f for kind in argument for f in getattr(ctx.facts.skin, kind)
                if not (ctx.confirmed_only and f.certainty == "suspected")]
    return Result(bool(findings), tuple(finding_evidence(f) for f in findings))


def _site_findings(ctx: EvalContext, sites: set[str]) -> list[Finding]:
    skin = ctx.facts.skin
    groups = (skin.calcinosis, skin.ulcer, skin.necrosis, skin.purpura_livedo, skin.nodule)
    return [f for group in groups for f in group if sites.intersection(f.body_sites)]


def _lesion_sites(argument: list[str], ctx: EvalContext) -> Result:
    findings = _site_findings(ctx, set(argument))
    return Result(bool(findings), tuple(finding_evidence(f) for f in findings))


def _lesion_sites_min(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    wanted = set(argument["sites"])
    hit = ctx.facts.skin.lesion_sites & wanted
    holds = len(hit) >= int(argument["count"])
    return Result(holds, tuple(finding_evidence(f) for f in _site_findings(ctx, wanted)) if holds else ())


def _lesions_only_in(argument: list[str], ctx: EvalContext) -> Result:
    sites = ctx.facts.skin.lesion_sites
    holds = bool(sites) and sites <= set(argument)
    return Result(holds, tuple(finding_evidence(f) for f in _site_findings(ctx, set(argument))) if holds else ())


def _age(check: Callable[[PatientFacts, float], bool], label: str) -> Predicate:
    def predicate(argument: float | str, ctx: EvalContext) -> Result:
        limit = ctx.knowledge.threshold(argument)
        if ctx.facts.birth_date is None or not check(ctx.facts, limit):
            return FALSE
        age = ctx.facts.age_years
        text = f"{ctx.facts.age_days} days" if label == "days" else f"{age:.0f} years" if age is not None else None
        return Result(True, (Evidence(kind="demographic", concept="age", text=text),))

    return predicate


def _adult(argument: Any, ctx: EvalContext) -> Result:
    return _age(lambda f, limit: (f.age_years or 0) >= limit, "years")("adult_age_years", ctx)


def _rule(argument: str, ctx: EvalContext) -> Result:
    if ctx.confirmed_only:
        # A critical flag built on a rule ("calciphylaxis on record", R38/R39) must not inherit the rule's
        # suspected evidence: the rule is evaluated again on asserted findings only (issue 11).
        return evaluate(ctx.knowledge.rule(argument).when, ctx)
    return ctx.rules.get(argument, FALSE)


def _rule_group(argument: list[str], ctx: EvalContext) -> Result:
    fired = [r for rule_id, r in ctx.rules.items() if r and ctx.rule_groups.get(rule_id) in set(argument)]
    return Result(bool(fired), combine(fired))


def _gate(argument: str, ctx: EvalContext) -> Result:
    if argument not in ctx.gates:
        ctx.gates[argument] = evaluate(ctx.knowledge.gates[argument], ctx)
    return ctx.gates[argument]


def risk_factor_results(ctx: EvalContext) -> tuple[list[tuple[str, Result]], list[tuple[str, Result]]]:
    major = [(f.id, r) for f in ctx.knowledge.risk_factors_major if (r := evaluate(f.when, ctx))]
    minor = [(f.id, r) for f in ctx.knowledge.risk_factors_minor if (r := evaluate(f.when, ctx))]
    return major, minor


def _calciphylaxis_risk_factors(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    major, minor = risk_factor_results(ctx)
    holds = len(major) >= int(argument["major"]) or (
        len(major) >= int(argument["or_major"]) and len(minor) >= int(argument["with_minor"])
    )
    return Result(holds, combine(r for _, r in major + minor) if holds else ())


def _always(argument: Any, ctx: EvalContext) -> Result:
    return Result(bool(argument))


def _status(field_name: str, concept: str) -> Predicate:
    """``pregnancy: [yes, unknown]``: the status (G-PREG, G-BF, G-MHV) is one of these."""

    def check(argument: list[str] | str, ctx: EvalContext) -> Result:
        wanted = {argument} if isinstance(argument, str) else set(argument)
        status: StatusFact = getattr(ctx.facts, field_name)
        if status.status not in wanted:
            return FALSE
        return Result(True, status_evidence(concept, status))

    return check


def _mechanical_valve(argument: bool, ctx: EvalContext) -> Result:
    holds = (ctx.facts.mechanical_valve.status == "yes") == bool(argument)
    return Result(holds, status_evidence("mechanical_valve", ctx.facts.mechanical_valve) if holds and argument else ())


def _valve(argument: list[str] | str, ctx: EvalContext) -> Result:
    kind, found = valve_kind(ctx.facts.conditions)
    holds = kind in ([argument] if isinstance(argument, str) else argument)
    return Result(holds, tuple(condition_evidence(c) for c in found) if holds else ())


def _age_band(argument: list[str], ctx: EvalContext) -> Result:
    band = ctx.age_band()
    if band not in set(argument):
        return FALSE
    age = ctx.facts.age_years
    text = f"{ctx.facts.age_days} days" if band == "neonate" else f"{age:.0f} years" if age is not None else None
    return Result(True, (Evidence(kind="demographic", concept="age", text=text, flags=(band,)),))


def _dialysis(argument: bool, ctx: EvalContext) -> Result:
    on = bool(ctx.facts.ckd and ctx.facts.ckd.dialysis)
    if on != bool(argument):
        return FALSE
    return Result(True, (Evidence(kind="derived", concept="ckd_stage", text="dialysis"),) if on else ())


def _data_unknown(argument: list[str], ctx: EvalContext) -> Result:
    """The data a rule needs could not be read ("medications" came as an error OperationOutcome)."""
    missing = [kind for kind in argument if kind in ctx.facts.unavailable]
    return Result(bool(missing), tuple(Evidence(kind="unknown", concept=kind) for kind in missing))


def _crcl_below(argument: float | str, ctx: EvalContext) -> Result:
    """CrCl below a label threshold: reported CrCl, else Cockcroft-Gault, else eGFR (flagged approximate)."""
    estimate = ctx.renal_for_dosing()
    if estimate is None or estimate.value >= ctx.knowledge.threshold(argument):
        return FALSE
    marker = Evidence(kind="derived", concept="renal_estimate", text=estimate.method)
    return Result(True, (marker, *estimate.evidence))


def _renal_function_unknown(argument: bool, ctx: EvalContext) -> Result:
    """Kidney function cannot be judged: a child's creatinine alone gives no eGFR (brief §4d: no Schwartz)."""
    ckd = ctx.facts.ckd
    # A transplant alone says nothing about today's kidney function; dialysis is G5.
    unknown = ctx.renal_for_dosing() is None and (ckd is None or (ckd.stage is None and not ckd.dialysis))
    if unknown != bool(argument):
        return FALSE
    return Result(True, (Evidence(kind="unknown", concept="renal-function"),) if unknown else ())


def _renal_estimate(argument: list[str], ctx: EvalContext) -> Result:
    """Which estimate a CrCl threshold would be checked on: crcl-reported, crcl-cockcroft-gault, egfr-approximation."""
    estimate = ctx.renal_for_dosing()
    if estimate is None or estimate.method not in set(argument):
        return FALSE
    return Result(True, (Evidence(kind="derived", concept="renal_estimate", text=estimate.method), *estimate.evidence))


def _subtype(argument: list[str], ctx: EvalContext) -> Result:
    """The suggested subtype (set after scoring; flags read it) is one of these."""
    return Result(ctx.subtype in set(argument))


def _flag(argument: str, ctx: EvalContext) -> Result:
    return ctx.flags.get(argument, FALSE)


def _focus(argument: list[str], ctx: EvalContext) -> Result:
    """The work-up is for one of these subtypes (idiopathic still in question: ANA needed)."""
    return Result(bool(ctx.focus.intersection(argument)))


def _offered(argument: list[str], ctx: EvalContext) -> Result:
    """One of these therapy options is offered to this patient (a caution about a combination)."""
    return Result(bool(ctx.offered.intersection(argument)))


def _symptomatic(argument: bool, ctx: EvalContext) -> Result:
    """An indication to treat: pain, ulcer, infection or joint destruction at the lesions (seed 000, S17)."""
    skin = ctx.facts.skin
    found = [f for group in (skin.pain, skin.ulcer, skin.infection, skin.joint_destruction) for f in group
             if f.certainty == "asserted"]
    holds = bool(found) == bool(argument)
    return Result(holds, tuple(finding_evidence(f) for f in found) if holds and argument else ())


_PREDICATES: dict[str, Predicate] = {
    "all": _all,
    "any": _any,
    "not": _not,
    "condition": _condition,
    "medication": _medication,
    "skin": _skin,
    "lesion_sites": _lesion_sites,
    "lesion_sites_min": _lesion_sites_min,
    "lesions_only_in": _lesions_only_in,
    "age_below_years": _age(lambda f, limit: (f.age_years or 0) < limit, "years"),
    "age_above_years": _age(lambda f, limit: (f.age_years or 0) > limit, "years"),
    "age_below_days": _age(lambda f, limit: (f.age_days or 0) < limit, "days"),
    "age_at_most_days": _age(lambda f, limit: (f.age_days or 0) <= limit, "days"),
    "adult": _adult,
    "rule": _rule,
    "rule_group": _rule_group,
    "gate": _gate,
    "calciphylaxis_risk_factors": _calciphylaxis_risk_factors,
    "always": _always,
    "medication_current": _medication_current,
    "pregnancy": _status("pregnancy", "pregnancy"),
    "breastfeeding": _status("breastfeeding", "breastfeeding"),
    "mechanical_valve": _mechanical_valve,
    "valve": _valve,
    "age_band": _age_band,
    "dialysis": _dialysis,
    "data_unknown": _data_unknown,
    "crcl_below": _crcl_below,
    "flag": _flag,
    "renal_function_unknown": _renal_function_unknown,
    "renal_estimate": _renal_estimate,
    "condition_group": _condition_group,
    "subtype": _subtype,
    "offered": _offered,
    "focus": _focus,
    "symptomatic": _symptomatic,

    **LAB_PREDICATES,
}

KNOWN_PREDICATES = frozenset(_PREDICATES)
