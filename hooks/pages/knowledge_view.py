"""The knowledge browser's content: every knowledge file as tables, for the clinicians who maintain them.

No PHI: only the package's knowledge files and terminology tables. Predicates are shown as the YAML a
maintainer writes (``{all: [{adult: true}, {ca_x_p_at_least: ca_x_p_critical}]}``), with their ids, points,
levels and citations, so a page and a file review read the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from fhir_mappings.terminology import concept_rows
from hooks.engine.knowledge import Localized
from hooks.pages.text import PageWords

__all__ = ["KnowledgeView", "Section", "Table", "knowledge_view"]


@dataclass(slots=True)
class Table:
    """One table of the page (its own ``h3`` when its section has several); ``code_columns`` show as code."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    code_columns: frozenset[int] = frozenset()
    intro: str = ""


@dataclass(slots=True)
class Section:
    id: str
    title: str
    tables: list[Table]


@dataclass(slots=True)
class KnowledgeView:
    meta: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)


def predicate(when: Any) -> str:
    if when is None:
        return ""
    return str(yaml.safe_dump(when, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False)).strip()


def _text(value: Localized | None, w: PageWords) -> str:
    return value.get(w.locale) if value is not None else ""


def _reference(w: PageWords, reference_id: str) -> str:
    reference = w.knowledge.references.get(reference_id)
    return reference.label if reference else reference_id


def _rules(w: PageWords) -> list[Table]:
    k, c = w.knowledge, w.col
    gates = Table("gates", w.heading("gates"), [c("gate"), c("when")],
                  [[name, predicate(when)] for name, when in k.gates.items()], frozenset({0, 1}))
    rules = Table("rules", w.heading("scoring_rules"), [c("id"), c("finding"), c("points"), c("when"), c("basis")],
                  [[r.id, _text(r.finding, w), w.points(r.points), predicate(r.when), r.basis] for r in k.rules],
                  frozenset({0, 3}))
    rules.intro = w.t("meta", "suggestion_rule", score=k.min_score, lead=k.min_lead)
    thresholds = Table("thresholds", w.heading("thresholds"), [c("key"), c("value")],
                       [[name, w.number(value, 2).rstrip("0").rstrip(",.")] for name, value in k.thresholds.items()],
                       frozenset({0}))
    return [rules, gates, thresholds]


def _flags(w: PageWords) -> list[Table]:
    k, c = w.knowledge, w.col
    flags = Table("flags", w.heading("red_flags"),
                  [c("id"), c("indicator"), c("text"), c("when"), c("basis"), c("citation")],
                  [[f.id, w.t("indicator", f.indicator), f"{_text(f.rule_text, w)} — {_text(f.action, w)}",
                    predicate(f.when), f.basis, _reference(w, f.reference)] for f in k.flags], frozenset({0, 3}))
    risks = Table("risks", w.heading("risks"), [c("id"), c("text"), c("when"), c("basis"), c("citation")],
                  [[r.id, _text(r.rule_text, w), predicate(r.when), r.basis, _reference(w, r.reference)]
                   for r in k.risks], frozenset({0, 2}))
    factors = Table("risk-factors", w.heading("risk_factors"), [c("id"), c("name"), c("level"), c("when")],
                    [[f.id, w.t("risk_factor", f.id), level, predicate(f.when)]
                     for level, group in (("major", k.risk_factors_major), ("minor", k.risk_factors_minor))
                     for f in group], frozenset({0, 3}))
    history = Table("history-alerts", w.heading("history_alerts"), [c("concept"), c("threshold"), c("basis")],
                    [[a.analyte, str(a.at_least), a.basis] for a in k.history_alerts], frozenset({0, 1}))
    return [flags, risks, factors, history]


def _workup(w: PageWords) -> list[Table]:
    k, c = w.knowledge, w.col
    rows = []
    for item in k.workup:
        orders = [f"LOINC {o.code} {o.display}" for o in (item.order, item.order_fr) if o is not None]
        rows.append([item.id, _text(item.name, w), _text(item.why, w), "; ".join(orders),
                     ", ".join(w.msg("subtype_names", s) for s in item.subtypes), predicate(item.needed_when)])
    workup = Table("workup", w.heading("workup"), [c("id"), c("name"), c("why"), c("order"), c("subtypes"),
                                                    c("when")], rows, frozenset({0, 5}))
    advisory = Table("advisory", w.heading("advisory"), [c("id"), c("text")],
                     [[a.id, _text(a.text, w)] for a in k.advisory], frozenset({0}))
    return [workup, advisory]


def _therapy(w: PageWords) -> list[Table]:
    k, c = w.knowledge, w.col
    options = []
    for o in sorted(k.options, key=lambda o: (o.subtypes, o.rank)):
        variants = "; ".join(f"{predicate(v.when)}: {_text(v.text, w)}" for v in o.variants)
        options.append([o.id, w.msg("option_labels", o.id), ", ".join(w.msg("subtype_names", s) for s in o.subtypes),
                        w.msg("extent_names", o.extent) if o.extent != "any" else "—", str(o.rank), o.evidence,
                        _text(o.text, w) + (f" [{variants}]" if variants else ""), o.basis])
    table = Table("options", w.heading("therapy_options"),
                  [c("id"), c("option"), c("subtypes"), c("extent"), c("rank"), c("evidence"), c("text"),
                   c("basis")], options, frozenset({0}))
    cautions = Table("cautions", w.heading("therapy_cautions"),
                     [c("id"), c("option"), c("level"), c("reason"), c("when"), c("text"), c("basis")],
                     [[x.id, ", ".join(w.msg("option_labels", o) for o in x.applies_to), w.t("level", x.level),
                       w.msg("reasons", x.reason), predicate(x.when), _text(x.text, w), x.basis] for x in k.cautions],
                     frozenset({0, 4}))
    return [table, cautions]


def _order_checks(w: PageWords) -> list[Table]:
    """Issue 15: the order-select / order-sign checks (``order_checks.yaml``), each with its citation."""
    from hooks.engine.order_knowledge import load_order_checks

    c, checks = w.col, load_order_checks()
    rows = []
    for x in checks.checks:
        drugs = ", ".join(x.order) + (f" + {', '.join(x.with_.concepts)}" if x.with_ else "")
        reference = checks.references[x.reference]
        rows.append([x.id, w.t("indicator", x.indicator), drugs, predicate(x.when), _text(x.reason, w), x.basis,
                     reference.label])
    return [Table("order-checks", w.heading("order_checks"),
                  [c("id"), c("indicator"), c("medication"), c("when"), c("text"), c("basis"), c("citation")],
                  rows, frozenset({0, 2, 3}))]


def _references(w: PageWords) -> Table:
    c = w.col
    return Table("references", w.heading("references"), [c("id"), c("citation"), c("url")],
                 [[key, ref.label, ref.url or ""] for key, ref in w.knowledge.references.items()], frozenset({0}))


def _codes(w: PageWords) -> list[Table]:
    c = w.col
    by_kind: dict[str, list[list[str]]] = {}
    for row in concept_rows():
        status = row.status + (f" ({w.t('word', 'unverified')})" if row.status == "UNVERIFIED" else "")
        by_kind.setdefault(row.kind, []).append([row.concept_id, row.system, row.code, row.display, status,
                                                 row.source])
    columns = [c("concept"), c("system"), c("code"), c("display"), c("status"), c("source")]
    return [Table(f"codes-{kind}", f"{w.heading('codes')}{w.colon()} {kind}", columns, rows, frozenset({0, 2}))
            for kind, rows in sorted(by_kind.items())]


def knowledge_view(w: PageWords) -> KnowledgeView:
    k = w.knowledge
    codes = _codes(w)
    meta = [(w.t("meta", "knowledge"), k.version), (w.t("meta", "knowledge_hash"), k.content_hash),
            ("", w.t("meta", "counts", rules=len(k.rules), flags=len(k.flags), options=len(k.options),
                     cautions=len(k.cautions), items=len(k.workup), codes=sum(len(t.rows) for t in codes)))]
    sections = [Section("scoring", w.heading("scoring"), _rules(w)), Section("flags", w.heading("flags"), _flags(w)),
                Section("workup", w.heading("workup"), _workup(w)),
                Section("therapy", w.heading("therapy_all"), _therapy(w)),
                Section("order-checks", w.heading("order_checks"), _order_checks(w)),
                Section("references", w.heading("references"), [_references(w)]),
                Section("codes", w.heading("codes"), codes)]
    return KnowledgeView(meta=meta, sections=sections)
