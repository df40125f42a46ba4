"""Predicates on laboratory results and derived values (calcium, phosphate, Ca x P, PTH, eGFR, CKD stage).

Part of the vocabulary documented in :mod:`hooks.engine.predicates`; rules C1-C3 and C6 of the brief §5e.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings.facts import LabValue
from hooks.engine.context import EvalContext
from hooks.engine.evidence import FALSE, Result, combine, derived_evidence, lab_evidence

__all__ = ["LAB_PREDICATES", "Predicate"]

Predicate = Callable[[Any, EvalContext], Result]


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
        return Result(True, combine([ckd, elevated]))
    return FALSE


def _ckd_at_least(argument: str, ctx: EvalContext) -> Result:
    return ctx.stage_at_least(argument)


def _egfr_below(argument: float | str, ctx: EvalContext) -> Result:
    value, evidence = ctx.egfr()
    holds = value is not None and value < ctx.knowledge.threshold(argument)
    return Result(holds, evidence if holds else ())


LAB_PREDICATES: dict[str, Predicate] = {
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
}
