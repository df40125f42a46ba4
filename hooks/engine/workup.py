"""The missing work-up, in proportion: the few tests that change the classification, each with its reason.

Implements the brief §5b (the checklist and what each item is for), rule C1 (only current values satisfy an
item; an older value is shown as history, "not current") and issue 10: no serology for a connective-tissue
disease already diagnosed, antibodies only where the picture fits, milk-alkali tests only with hypercalcaemia
off dialysis, a minimal neonatal work-up, and at most ``max_workup_orders`` draft orders, ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_mappings.facts import LabValue
from hooks.engine.context import EvalContext
from hooks.engine.evidence import Evidence, lab_evidence
from hooks.engine.predicates import evaluate

__all__ = ["WorkupPlan", "plan_workup"]


@dataclass(frozen=True, slots=True)
class WorkupPlan:
    # Ordered as draft orders, most decisive first (at most max_workup_orders).
    missing: tuple[str, ...]
    # Needed too, but past the cap: named, not ordered.
    deferred: tuple[str, ...] = ()
    # Item id -> the newest older value (outside the look-back window): "last 14.6 mg/dL on ..., not current".
    last_values: tuple[tuple[str, Evidence], ...] = ()

    def last_value(self, item_id: str) -> Evidence | None:
        return dict(self.last_values).get(item_id)


def _satisfied(ctx: EvalContext, analytes: list[str]) -> bool:
    return any(ctx.facts.latest(a) is not None for a in analytes)


def _older(ctx: EvalContext, analytes: list[str]) -> LabValue | None:
    values = [v for a in analytes if (s := ctx.facts.labs.get(a)) for v in s.history
              if v.effective is not None and (v.value is not None or v.qualitative)]
    return max(values, key=lambda v: v.effective or ctx.facts.now, default=None)


def missing_items(ctx: EvalContext, item_ids: tuple[str, ...]) -> tuple[str, ...]:
    items = {i.id: i for i in ctx.knowledge.workup}
    return tuple(i for i in item_ids if not _satisfied(ctx, items[i].satisfied_by))


def plan_workup(ctx: EvalContext, focus: set[str]) -> WorkupPlan:
    ctx.focus = frozenset(focus)
    band = ctx.age_band()
    needed = []
    for item in ctx.knowledge.workup:
        relevant = "all" in item.subtypes or bool(focus.intersection(item.subtypes))
        if not relevant or band in item.skip_age_bands or _satisfied(ctx, item.satisfied_by):
            continue
        if item.needed_when is not None and not evaluate(item.needed_when, ctx):
            continue
        needed.append(item)
    needed.sort(key=lambda item: item.priority)
    cap = int(ctx.knowledge.threshold("max_workup_orders"))
    last_values = []
    for item in needed:
        older = _older(ctx, item.satisfied_by)
        if older is not None:
            last_values.append((item.id, lab_evidence(older)))
    return WorkupPlan(
        missing=tuple(i.id for i in needed[:cap]),
        deferred=tuple(i.id for i in needed[cap:]),
        last_values=tuple(last_values),
    )
