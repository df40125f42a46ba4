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
``egfr_below: n``               current reported or computed eGFR below n
``skin: [kinds]``               a skin finding of one of these kinds (SkinFindings fields)
``lesion_sites: [s...]``        a lesion at one of these sites
``lesion_sites_min: {sites, count}``  lesions at >= count of these sites
``lesions_only_in: [s...]``     lesions recorded, all within these sites
``age_below_years`` / ``age_above_years`` / ``age_below_days`` / ``age_at_most_days`` / ``adult``
``rule: R31`` / ``rule_group: [g...]`` / ``gate: name``  results evaluated earlier
``calciphylaxis_risk_factors: {major, or_major, with_minor}``  consensus 2023 counting
``always: true``
=============================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_mappings.facts import (
    ConditionFact,
    DerivedValue,
    Finding,
    LabValue,
    MedicationFact,
    PatientFacts,
)
from hooks.engine.knowledge import Knowledge

__all__ = ["EvalContext", "Evidence", "Result", "UnknownPredicate", "evaluate"]

_STAGE_ORDER = {"G1": 1, "G2": 2, "G3a": 3, "G3b": 4, "G4": 5, "G5": 6}


class UnknownPredicate(ValueError):
    """A knowledge file uses a predicate this engine does not know (caught by the knowledge tests)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One input a rule used, ready to show on a card and to store in the audit record."""

    kind: str
    concept: str
    value: float | None = None
    unit: str | None = None
    text: str | None = None
    date: datetime | None = None
    reference: str | None = None
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "concept": self.concept}
        if self.value is not None:
            data["value"] = self.value
        if self.unit:
            data["unit"] = self.unit
        if self.text:
            data["text"] = self.text
        if self.date:
            data["date"] = self.date.isoformat()
        if self.reference:
            data["reference"] = self.reference
        if self.flags:
            data["flags"] = list(self.flags)
        return data


@dataclass(frozen=True, slots=True)
class Result:
    holds: bool
    evidence: tuple[Evidence, ...] = ()

    def __bool__(self) -> bool:
        return self.holds


FALSE = Result(False)


def lab_evidence(value: LabValue) -> Evidence:
    return Evidence(
        kind="lab",
        concept=value.analyte,
        value=value.value,
        unit=value.unit,
        text=value.provenance.original,
        date=value.effective,
        reference=value.provenance.reference,
        flags=value.flags + ((value.comparator,) if value.comparator else ()),
    )


def derived_evidence(value: DerivedValue) -> tuple[Evidence, ...]:
    own = Evidence(
        kind="derived",
        concept=value.name,
        value=round(value.value, 2),
        unit=value.unit,
        text=value.method,
        date=value.effective,
        flags=value.flags,
    )
    return (own, *(lab_evidence(v) for v in value.inputs))


def condition_evidence(condition: ConditionFact) -> Evidence:
    return Evidence(
        kind="condition",
        concept=condition.concept,
        text=condition.provenance.display or condition.text,
        date=condition.onset or condition.recorded,
        reference=condition.provenance.reference,
        flags=tuple(s for s in (condition.clinical_status, condition.verification_status) if s),
    )


def medication_evidence(medication: MedicationFact) -> Evidence:
    return Evidence(
        kind="medication",
        concept=medication.concept,
        text=medication.provenance.display or medication.text,
        date=medication.authored or medication.period_start,
        reference=medication.provenance.reference,
        flags=tuple(s for s in (medication.status,) if s),
    )


def finding_evidence(finding: Finding) -> Evidence:
    return Evidence(
        kind="finding",
        concept=finding.kind,
        text=finding.matched_text or finding.provenance.display,
        date=finding.effective,
        reference=finding.provenance.reference,
        flags=finding.body_sites,
    )


@dataclass(slots=True)
class EvalContext:
    facts: PatientFacts
    knowledge: Knowledge
    rules: dict[str, Result] = field(default_factory=dict)
    rule_groups: dict[str, str | None] = field(default_factory=dict)
    gates: dict[str, Result] = field(default_factory=dict)

    # ----------------------------------------------------------------- shared clinical readings

    def calcium(self) -> tuple[float | None, LabValue | None, tuple[Evidence, ...]]:
        """Corrected calcium in mg/dL, or measured total calcium when no albumin is paired (rule C2).

        Returns the value, the total-calcium result whose reference range applies, and the evidence.
        """
        derived = self.facts.derived.get("calcium_corrected")
        if derived is not None:
            basis = next((v for v in derived.inputs if v.analyte == "calcium_total"), None)
            return derived.value, basis, derived_evidence(derived)
        for analyte in ("calcium_corrected", "calcium_total"):
            latest = self.facts.latest(analyte)
            if latest is not None and latest.value is not None:
                return latest.value, latest, (lab_evidence(latest),)
        return None, None, ()

    def egfr(self) -> tuple[float | None, tuple[Evidence, ...]]:
        latest = self.facts.latest("egfr")
        if latest is not None and latest.value is not None:
            return latest.value, (lab_evidence(latest),)
        derived = self.facts.derived.get("egfr_ckd_epi_2021")
        if derived is not None:
            return derived.value, derived_evidence(derived)
        return None, ()

    def in_ckd_3_to_5(self) -> Result:
        stage = self.stage_at_least("G3a")
        if stage:
            return stage
        conditions = self.facts.active_conditions("ckd_3", "ckd_3a", "ckd_3b", "ckd_4", "ckd_5", "esrd", "dialysis")
        return Result(bool(conditions), tuple(condition_evidence(c) for c in conditions))

    def stage_at_least(self, stage: str) -> Result:
        ckd = self.facts.ckd
        if ckd is None:
            return FALSE
        rank = 6 if ckd.dialysis else _STAGE_ORDER.get(ckd.stage or "", 0)
        if rank >= _STAGE_ORDER[stage]:
            text = f"{ckd.stage or ''}{'D' if ckd.dialysis else ''} ({ckd.source})"
            return Result(True, (Evidence(kind="derived", concept="ckd_stage", text=text),))
        return FALSE

    def ca_x_p(self) -> DerivedValue | None:
        return self.facts.derived.get("ca_x_p")

    def is_adult(self) -> bool:
        age = self.facts.age_years
        return age is not None and age >= self.knowledge.threshold("adult_age_years")


Predicate = Callable[[Any, EvalContext], Result]


def evaluate(predicate: Mapping[str, Any], ctx: EvalContext) -> Result:
    if len(predicate) != 1:
        raise UnknownPredicate(f"a predicate has exactly one key, got {sorted(predicate)}")
    (name, argument), = predicate.items()
    handler = _PREDICATES.get(name)
    if handler is None:
        raise UnknownPredicate(name)
    return handler(argument, ctx)


def _combine(results: Iterable[Result]) -> tuple[Evidence, ...]:
    seen: dict[tuple[str, str, str | None, str | None], Evidence] = {}
    for result in results:
        for item in result.evidence:
            seen.setdefault((item.kind, item.concept, item.reference, item.text), item)
    return tuple(seen.values())


def _all(argument: list[Mapping[str, Any]], ctx: EvalContext) -> Result:
    results = []
    for part in argument:
        result = evaluate(part, ctx)
        if not result:
            return FALSE
        results.append(result)
    return Result(True, _combine(results))


def _any(argument: list[Mapping[str, Any]], ctx: EvalContext) -> Result:
    results = [r for r in (evaluate(part, ctx) for part in argument) if r]
    return Result(bool(results), _combine(results))


def _not(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    return Result(not evaluate(argument, ctx))


def _condition(argument: list[str], ctx: EvalContext) -> Result:
    found = ctx.facts.active_conditions(*argument)
    return Result(bool(found), tuple(condition_evidence(c) for c in found))


def _medication(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    found = ctx.facts.medications_within(int(argument["within_days"]), *argument["concepts"])
    return Result(bool(found), tuple(medication_evidence(m) for m in found))


def _present(argument: list[str], ctx: EvalContext) -> Result:
    for analyte in argument:
        latest = ctx.facts.latest(analyte)
        if latest is not None:
            return Result(True, (lab_evidence(latest),))
    return FALSE


def _latest_numeric(ctx: EvalContext, analyte: str) -> LabValue | None:
    latest = ctx.facts.latest(analyte)
    return latest if latest is not None and latest.value is not None else None


def _lab_flag(attribute: str) -> Predicate:
    def check(analyte: str, ctx: EvalContext) -> Result:
        latest = ctx.facts.latest(analyte)
        if latest is not None and getattr(latest, attribute) is True:
            return Result(True, (lab_evidence(latest),))
        return FALSE

    return check


def _compare(op: str) -> Predicate:
    def check(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
        latest = _latest_numeric(ctx, argument["analyte"])
        if latest is None or latest.value is None:
            return FALSE
        limit = ctx.knowledge.threshold(argument["value"])
        value, comparator = latest.value, latest.comparator
        # A censored value ("<5", ">1000") only decides a comparison its bound settles.
        if op in {">", ">="}:
            holds = value > limit if op == ">" else value >= limit
            if comparator in {"<", "<="}:
                holds = False
        else:
            holds = value < limit
            if comparator in {">", ">="}:
                holds = False
            if comparator in {"<", "<="}:
                holds = value <= limit
        return Result(holds, (lab_evidence(latest),) if holds else ())

    return check


def _lab_uln_multiple(argument: Mapping[str, Any], ctx: EvalContext) -> Result:
    latest = _latest_numeric(ctx, argument["analyte"])
    if latest is None or latest.value is None or latest.reference_range is None:
        return FALSE
    high = latest.reference_range.high
    holds = high is not None and latest.value > float(argument["factor"]) * high
    return Result(holds, (lab_evidence(latest),) if holds else ())


def _antibody_positive(argument: list[str], ctx: EvalContext) -> Result:
    found = [v for a in argument if (v := ctx.facts.latest(a)) is not None and v.is_positive is True]
    return Result(bool(found), tuple(lab_evidence(v) for v in found))


def _calcium_high(argument: Any, ctx: EvalContext) -> Result:
    value, basis, evidence = ctx.calcium()
    if value is None or basis is None:
        return FALSE
    high = basis.reference_range.high if basis.reference_range else None
    holds = high is not None and value > high
    return Result(holds, evidence if holds else ())


def _calcium_low(argument: Any, ctx: EvalContext) -> Result:
    value, basis, evidence = ctx.calcium()
    if value is None or basis is None:
        return FALSE
    low = basis.reference_range.low if basis.reference_range else None
    holds = low is not None and value < low
    return Result(holds, evidence if holds else ())


def _calcium_at_least(argument: float | str, ctx: EvalContext) -> Result:
    value, _, evidence = ctx.calcium()
    holds = value is not None and value >= ctx.knowledge.threshold(argument)
    return Result(holds, evidence if holds else ())


def _ca_p_pth_normal(argument: Any, ctx: EvalContext) -> Result:
    value, basis, calcium_evidence = ctx.calcium()
    if value is None or basis is None or basis.reference_range is None:
        return FALSE
    low, high = basis.reference_range.low, basis.reference_range.high
    if (low is not None and value < low) or (high is not None and value > high):
        return FALSE
    evidence = list(calcium_evidence)
    for analyte in ("phosphate", "pth_intact"):
        latest = ctx.facts.latest(analyte)
        if latest is None or latest.is_high is not False or latest.is_low is True:
            return FALSE
        evidence.append(lab_evidence(latest))
    return Result(True, tuple(evidence))


def _ca_x_p_at_least(argument: float | str, ctx: EvalContext) -> Result:
    product = ctx.ca_x_p()
    holds = product is not None and product.value >= ctx.knowledge.threshold(argument)
    return Result(holds, derived_evidence(product) if holds and product else ())


def _ca_x_p_high(argument: Any, ctx: EvalContext) -> Result:
    if not ctx.is_adult():
        return FALSE
    critical = _ca_x_p_at_least("ca_x_p_critical", ctx)
    if critical:
        return critical
    ckd = ctx.in_ckd_3_to_5()
    elevated = _ca_x_p_at_least("ca_x_p_ckd_warning", ctx)
    if ckd and elevated:
        return Result(True, _combine([ckd, elevated]))
    return FALSE


def _ckd_at_least(argument: str, ctx: EvalContext) -> Result:
    return ctx.stage_at_least(argument)


def _egfr_below(argument: float | str, ctx: EvalContext) -> Result:
    value, evidence = ctx.egfr()
    holds = value is not None and value < ctx.knowledge.threshold(argument)
    return Result(holds, evidence if holds else ())


def _skin(argument: list[str], ctx: EvalContext) -> Result:
    findings = [f for kind in argument for f in getattr(ctx.facts.skin, kind)]
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
    return ctx.rules.get(argument, FALSE)


def _rule_group(argument: list[str], ctx: EvalContext) -> Result:
    fired = [r for rule_id, r in ctx.rules.items() if r and ctx.rule_groups.get(rule_id) in set(argument)]
    return Result(bool(fired), _combine(fired))


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
    return Result(holds, _combine(r for _, r in major + minor) if holds else ())


def _always(argument: Any, ctx: EvalContext) -> Result:
    return Result(bool(argument))


_PREDICATES: dict[str, Predicate] = {
    "all": _all,
    "any": _any,
    "not": _not,
    "condition": _condition,
    "medication": _medication,
    "present": _present,
    "lab_high": _lab_flag("is_high"),
    "lab_low": _lab_flag("is_low"),
    "lab_above": _compare(">"),
    "lab_at_least": _compare(">="),
    "lab_below": _compare("<"),
    "lab_uln_multiple": _lab_uln_multiple,
    "antibody_positive": _antibody_positive,
    "calcium_high": _calcium_high,
    "calcium_low": _calcium_low,
    "calcium_at_least": _calcium_at_least,
    "ca_p_pth_normal": _ca_p_pth_normal,
    "ca_x_p_high": _ca_x_p_high,
    "ca_x_p_at_least": _ca_x_p_at_least,
    "ckd_at_least": _ckd_at_least,
    "egfr_below": _egfr_below,
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
}

KNOWN_PREDICATES = frozenset(_PREDICATES)
