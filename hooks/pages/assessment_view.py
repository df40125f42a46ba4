"""What the assessment page shows, built from one stored audit record (never from a new assessment).

Plain strings and small records only: the template escapes every one of them (Jinja autoescape), so text
that came from the EHR (code displays, notes, resource ids) can never become markup. Evidence lines are the
cards' own (``hooks.engine.cards.lines``), so the page and the cards word a fact the same way; the page adds
the FHIR resource each fact came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from hooks.audit.records import HookCallRecord
from hooks.engine.cards.lines import Ledger, evidence_lines
from hooks.engine.evidence import Evidence
from hooks.pages.charts import Chart, charts_for
from hooks.pages.text import PageWords

__all__ = ["AssessmentView", "EvidenceRow", "assessment_view", "card_markdown"]

# The cards' markdown as the EHR would show it: CommonMark with raw HTML off (escaped), no headings (the
# page's outline stays its own), no images (the CSP would refuse them anyway); markdown-it refuses
# javascript:, vbscript:, file: and data: link targets.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable(["heading", "lheading", "image"])


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    text: str
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Reference:
    label: str
    url: str | None = None


@dataclass(slots=True)
class AssessmentView:
    locale: str
    title: str
    meta: list[tuple[str, str]]
    notes: list[str]
    cards: list[dict[str, str]]
    subtype: str | None = None
    differential: list[tuple[str, str, bool]] = field(default_factory=list)
    suggestion_rule: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    therapy: dict[str, Any] | None = None
    workup: list[dict[str, str]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    history: list[EvidenceRow] = field(default_factory=list)
    data_notes: list[tuple[str, str]] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    has_assessment: bool = False


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _evidence(item: dict[str, Any]) -> Evidence | None:
    if not isinstance(item.get("kind"), str) or not isinstance(item.get("concept"), str):
        return None
    date = None
    if isinstance(item.get("date"), str):
        try:
            date = datetime.fromisoformat(item["date"])
        except ValueError:
            date = None
    value = item.get("value")
    return Evidence(kind=item["kind"], concept=item["concept"],
                    value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
                    unit=item.get("unit") if isinstance(item.get("unit"), str) else None,
                    text=item.get("text") if isinstance(item.get("text"), str) else None, date=date,
                    reference=item.get("reference") if isinstance(item.get("reference"), str) else None,
                    flags=tuple(f for f in _list(item.get("flags")) if isinstance(f, str)))


def evidence_rows(items: Any, w: PageWords) -> list[EvidenceRow]:
    """One row per input: the card's wording of it, and the FHIR resource it came from."""
    rows: list[EvidenceRow] = []
    seen: set[tuple[str, str]] = set()
    for raw in _list(items):
        item = _evidence(_dict(raw))
        if item is None:
            continue
        lines = evidence_lines(w.words, [item], Ledger(), 1)
        row = EvidenceRow(lines[0] if lines else w.label(item.concept), item.reference or "")
        if (row.text, row.reference) not in seen:
            seen.add((row.text, row.reference))
            rows.append(row)
    return rows


def _reference(w: PageWords, reference_id: Any) -> Reference | None:
    reference = w.knowledge.references.get(str(reference_id))
    return None if reference is None else Reference(reference.label, _web_url(reference.url) or None)


def _cards(record: HookCallRecord, w: PageWords) -> list[dict[str, str]]:
    cards = []
    for card in record.cards:
        if not isinstance(card, dict):
            continue
        indicator = str(card.get("indicator") or "info")
        source = _dict(card.get("source"))
        cards.append({"indicator": indicator if indicator in {"critical", "warning", "info"} else "info",
                      "indicator_label": w.t("indicator", indicator), "summary": str(card.get("summary") or ""),
                      "detail": card_markdown(str(card.get("detail") or "")), "source": str(source.get("label") or ""),
                      "source_url": _web_url(source.get("url"))})
    return cards


def card_markdown(detail: str) -> Markup:
    """A card's detail as HTML (markdown-it escapes every text and refuses raw HTML)."""
    return Markup(_MARKDOWN.render(detail))  # noqa: S704 - markdown-it output, html option off


def _web_url(value: Any) -> str:
    """Only an http(s) URL becomes a link (never ``javascript:`` or ``data:``, whoever wrote the card)."""
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else ""


def _gates(snapshot: dict[str, Any], w: PageWords) -> list[dict[str, Any]]:
    gates = _dict(snapshot.get("gates"))
    metabolic, complete = _dict(gates.get("metabolicAbnormality")), _dict(gates.get("workupComplete"))
    missing = [_workup_name(w, i) for i in _list(complete.get("missing"))]
    return [
        {"name": w.t("gate", "metabolicAbnormality"), "holds": _yes(w, metabolic.get("holds")),
         "inputs": evidence_rows(metabolic.get("evidence"), w), "detail": ""},
        {"name": w.t("gate", "workupComplete"), "holds": _yes(w, complete.get("holds")), "inputs": [],
         "detail": f"{w.t('word', 'missing')}{w.colon()} {', '.join(missing)}" if missing else ""},
        {"name": w.t("gate", "calciphylaxisKept"), "holds": _yes(w, gates.get("calciphylaxisKept")), "inputs": [],
         "detail": ""},
    ]


def _yes(w: PageWords, value: Any) -> str:
    return w.t("word", "yes") if value else w.t("word", "no")


def _workup_name(w: PageWords, item_id: Any) -> str:
    item = next((i for i in w.knowledge.workup if i.id == item_id), None)
    return item.name.get(w.locale) if item else str(item_id)


def _flags(snapshot: dict[str, Any], w: PageWords) -> list[dict[str, Any]]:
    rows = []
    definitions = {f.id: f for f in w.knowledge.flags}
    risks = {r.id: r for r in w.knowledge.risks}
    for raw in _list(snapshot.get("flags")) + _list(snapshot.get("risks")):
        hit = _dict(raw)
        definition = definitions.get(str(hit.get("id"))) or risks.get(str(hit.get("id")))
        is_risk = "factors" in hit
        indicator = "info" if is_risk else str(hit.get("indicator") or "warning")
        factors = [w.t("risk_factor", str(f)) for f in _list(hit.get("factors"))]
        evidence = [e for e in map(_evidence, map(_dict, _list(hit.get("evidence")))) if e is not None]
        rows.append({
            "name": _flag_summary(definition.summary.get(w.locale), evidence, w) if definition else str(hit.get("id")),
            "rule": definition.rule_text.get(w.locale) if definition else "",
            "indicator": indicator, "indicator_label": w.t("indicator", indicator),
            "note": w.t("word", "suspected") if hit.get("basis") == "suspected" else "",
            "factors": f"{w.t('word', 'risk_factors')}{w.colon()} {', '.join(factors)}" if factors else "",
            "inputs": evidence_rows(hit.get("evidence"), w),
            "reference": _reference(w, definition.reference) if definition else None,
        })
    return rows


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "—"


def _flag_summary(template: str, evidence: list[Evidence], w: PageWords) -> str:
    """The flag's summary line, filled with the values of its own evidence (as its card was)."""
    values = _Missing()
    for item in evidence:
        if item.value is None:
            continue
        if item.concept == "ca_x_p":
            values.setdefault("ca_x_p", w.quantity("ca_x_p", item.value))
        elif item.concept in {"calcium_corrected", "calcium_total"}:
            values.setdefault("calcium", w.quantity("calcium_total", item.value))
        elif item.concept == "phosphate":
            values.setdefault("phosphate", w.quantity("phosphate", item.value))
    return template.format_map(values)


def _therapy(snapshot: dict[str, Any], w: PageWords) -> dict[str, Any] | None:
    plan = _dict(snapshot.get("therapy"))
    if not plan:
        return None
    k = w.knowledge
    options = {o.id: o for o in k.options}
    cautions = {c.id: c for c in k.cautions}
    variants = _dict(plan.get("variants"))
    offered = []
    for rank, option_id in enumerate(_list(plan.get("options")), start=1):
        option = options.get(option_id)
        text = option.text.get(w.locale) if option else ""
        index = variants.get(option_id)
        if option and isinstance(index, int) and 0 <= index < len(option.variants):
            text = option.variants[index].text.get(w.locale)
        notes = [cautions[c["id"]].text.get(w.locale) for c in map(_dict, _list(plan.get("cautions")))
                 if c.get("option") == option_id and not c.get("contraindicates") and c.get("id") in cautions]
        offered.append({"rank": str(rank), "label": w.msg("option_labels", str(option_id)), "text": text,
                        "evidence": option.evidence if option else "", "notes": notes})
    caution_rows = []
    for caution in map(_dict, _list(plan.get("cautions"))):
        known = cautions.get(str(caution.get("id")))
        level = str(caution.get("level") or "caution")
        caution_rows.append({"option": w.msg("option_labels", str(caution.get("option"))),
                             "level": w.t("level", level), "contraindicates": bool(caution.get("contraindicates")),
                             "reason": w.msg("reasons", str(caution.get("reason"))),
                             "text": known.text.get(w.locale) if known else "",
                             "inputs": evidence_rows(caution.get("evidence"), w)})
    uses = []
    for use in map(_dict, _list(plan.get("current"))):
        when = w.msg("text", "since", date=w.date(use.get("since"))) if use.get("since") else ""
        uses.append({"medication": w.label(str(use.get("medication"))), "option": w.msg("option_labels", str(
            use.get("option"))), "status": w.msg("heading", "current"), "date": when})
    for use in map(_dict, _list(plan.get("tried"))):
        when = w.msg("text", "stopped", date=w.date(use.get("stopped"))) if use.get("stopped") else ""
        uses.append({"medication": w.label(str(use.get("medication"))), "option": w.msg("option_labels", str(
            use.get("option"))), "status": w.msg("heading", "tried"), "date": when})
    subtype = str(plan.get("subtype") or "")
    meta = [(w.t("column", "subtype"), w.msg("subtype_titles", subtype) if subtype else ""),
            (w.t("meta", "extent"), w.msg("extent_names", str(plan.get("extent") or "unknown"))),
            (w.t("meta", "indication"), _yes(w, plan.get("indication")))]
    unknowns = [w.msg("unknown", str(u)) for u in _list(plan.get("unknowns"))]
    return {"meta": meta, "options": offered, "cautions": caution_rows, "uses": uses, "unknowns": unknowns}


def _workup(snapshot: dict[str, Any], w: PageWords) -> list[dict[str, str]]:
    plan = _dict(snapshot.get("workup"))
    items = {i.id: i for i in w.knowledge.workup}
    last = _dict(plan.get("lastValues"))
    rows = []
    for status, ids in (("missing", plan.get("missing")), ("deferred", plan.get("deferred"))):
        for item_id in _list(ids):
            item = items.get(item_id)
            previous = evidence_rows([last[item_id]], w) if item_id in last else []
            rows.append({"name": _workup_name(w, item_id), "why": item.why.get(w.locale) if item else "",
                         "status": w.t("word", status),
                         "last": f"{w.t('word', 'last_value')}{w.colon()} {previous[0].text}" if previous else "",
                         "order": item.order.code if item else ""})
    return rows


def _data_notes(snapshot: dict[str, Any], w: PageWords) -> list[tuple[str, str]]:
    notes = [(w.t("word", "not_recorded"), w.msg("unknown", str(u))) for u in _list(snapshot.get("unknowns"))]
    for raw in map(_dict, _list(snapshot.get("notUsed"))):
        concept = raw.get("concept")
        what = w.label(str(concept)).lower() if concept else "?"
        notes.append((w.t("word", "not_used"), w.msg("not_used", str(raw.get("kind")), count=raw.get("count", 0),
                                                        what=what, code=str(raw.get("code") or "?"))))
    for raw in map(_dict, _list(snapshot.get("setAside"))):
        text = f"{w.label(str(raw.get('kind')))}{w.colon()} {w.t('set_aside', str(raw.get('reason')))}"
        if raw.get("cue"):
            text += f" («\u00a0{raw['cue']}\u00a0»)" if w.locale == "fr" else f' ("{raw["cue"]}")'
        if raw.get("reference"):
            text += f" — {raw['reference']}"
        notes.append((w.t("word", "set_aside"), text))
    return notes


def _patient_meta(record: HookCallRecord, snapshot: dict[str, Any], w: PageWords) -> list[tuple[str, str]]:
    patient = _dict(snapshot.get("patient"))
    meta = [(w.t("meta", "patient"), str(patient.get("reference") or record.patient_ref or ""))]
    age = patient.get("ageYears")
    if isinstance(age, int | float) and not isinstance(age, bool):
        meta.append((w.t("meta", "age"), w.t("meta", "years", age=w.number(float(age), 0))))
    if patient.get("sex"):
        meta.append((w.t("meta", "sex"), w.t("sex", str(patient["sex"]))))
    ckd = _dict(patient.get("ckd"))
    if ckd:
        parts = [f"{w.label('ckd_stage')} {ckd.get('stage') or '?'}"]
        parts += [w.t("word", word) for word in ("dialysis", "transplant") if ckd.get(word)]
        meta.append((w.t("meta", "ckd"), ", ".join(parts)))
    meta.append((w.t("meta", "evaluated"), w.date_time(snapshot.get("evaluatedAt") or record.received_at)))
    return meta


def assessment_view(record: HookCallRecord, w: PageWords) -> AssessmentView:
    snapshot = _dict(record.assessment)
    knowledge = _dict(snapshot.get("knowledge"))
    view = AssessmentView(locale=w.locale, title=w.t("page", "assessment_title"),
                          meta=_patient_meta(record, snapshot, w), notes=[], cards=_cards(record, w),
                          has_assessment=bool(snapshot))
    view.provenance = [
        (w.t("meta", "received"), w.date_time(record.received_at.astimezone(UTC))),
        (w.t("meta", "service"), str(record.service_id or "")),
        (w.t("meta", "hook_instance"), str(record.hook_instance or "")),
        (w.t("meta", "knowledge"), str(knowledge.get("version") or record.ruleset_version or "")),
        (w.t("meta", "knowledge_hash"), str(knowledge.get("hash") or record.ruleset_hash or "")),
        (w.t("meta", "code_version"), str(record.code_version or "")),
    ]
    if not snapshot:
        view.notes.append(w.t("page", "no_assessment"))
        return view
    version = knowledge.get("hash")
    if version and version != w.knowledge.content_hash:
        view.notes.append(w.t("page", "knowledge_changed", version=knowledge.get("version"),
                              current=w.knowledge.version))
    subtype = str(snapshot.get("subtype") or "")
    view.subtype = w.msg("subtype_names", subtype) if subtype else None
    view.differential = [(w.msg("subtype_names", str(d.get("subtype"))), w.signed(int(d.get("score") or 0)),
                          d.get("subtype") == subtype) for d in map(_dict, _list(snapshot.get("differential")))]
    suggestion = _dict(snapshot.get("suggestion"))
    if suggestion:
        view.suggestion_rule = w.t("meta", "suggestion_rule", score=suggestion.get("minScore"),
                                   lead=suggestion.get("minLead"))
    view.rules = [{"id": str(r.get("id")), "finding": _dict(r.get("finding")).get(w.locale, ""),
                   "points": w.points(r.get("points")), "citation": str(r.get("basis") or ""),
                   "inputs": evidence_rows(r.get("evidence"), w)} for r in map(_dict, _list(snapshot.get("rules")))]
    view.gates = _gates(snapshot, w)
    view.flags = _flags(snapshot, w)
    view.therapy = _therapy(snapshot, w)
    view.workup = _workup(snapshot, w)
    view.charts = charts_for(snapshot.get("series"), w)
    view.history = evidence_rows(snapshot.get("history"), w)
    view.data_notes = _data_notes(snapshot, w)
    return view
