"""An ``Assessment`` as CDS Hooks 2.0 cards a clinician reads in ten seconds, in English or French.

Each card says what was found, what to do, and the two to four decisive facts, one line each (issue 12). The
budgets are: summary under 140 characters, detail within about 600 characters and 8 lines, at most 4 cards
per patient with at most one critical card unless independent red flags fire (flags of one ``group`` share a
card), and no evidence item twice in one response. Internal ids (rule, option, caution and resource ids) stay
in ``extension["calcinosis-cds"]``, the public contract documented in the README; the full reasoning is on
the assessment page the card links to.

Card and suggestion uuids derive from the hook instance (uuid5): the same call renders the same cards.
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache
from typing import Any, Final

import orjson
from fhir.resources.R4B.servicerequest import ServiceRequest

from fhir_mappings.facts import PatientFacts, StageDiscrepancy
from hooks.engine.assessment import Assessment, FlagHit
from hooks.engine.cards.lines import Ledger, evidence_lines
from hooks.engine.cards.text import Words, md_text
from hooks.engine.cards.therapy_card import TherapyCard
from hooks.engine.evidence import Evidence
from hooks.engine.knowledge import FlagDefinition, Knowledge, RiskDefinition, load_knowledge
from hooks.models import SUMMARY_MAX_CHARS, Action, Card, OverrideReason, Source, Suggestion

__all__ = [
    "EXTENSION_KEY", "MAX_DETAIL_CHARS", "MAX_DETAIL_LINES", "OVERRIDE_REASON_SYSTEM", "fit_detail", "render_cards",
]

EXTENSION_KEY = "calcinosis-cds"
# Our own code system for override reasons (CDS Hooks #overridereason lets the service define them).
OVERRIDE_REASON_SYSTEM = "urn:calcinosis-cds:override-reason"
MAX_DETAIL_CHARS: Final = 600
MAX_DETAIL_LINES: Final = 8
_LOINC = "http://loinc.org"
_FACTS: Final = 4


def fit_detail(lines: list[str]) -> str:
    """Keep lines in priority order within the detail budget (the first line always)."""
    kept: list[str] = []
    used = 0
    for line in lines:
        if not line:
            continue
        if kept and (len(kept) >= MAX_DETAIL_LINES or used + len(line) + 1 > MAX_DETAIL_CHARS):
            continue
        kept.append(line)
        used += len(line) + 1
    # A paragraph right after a list needs a blank line, or markdown folds it into the last item
    # ("CKD G4 **Also:** ..."). The blank line is not a line of text: the budget counts the others.
    out = []
    for previous, line in zip(["", *kept], kept, strict=False):
        if _is_item(previous) and not _is_item(line):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _is_item(line: str) -> bool:
    return line.startswith("- ") or (line[:1].isdigit() and ". " in line[:4])


class _Renderer:
    def __init__(self, assessment: Assessment, facts: PatientFacts, words: Words, seed: str) -> None:
        self.a = assessment
        self.facts = facts
        self.w = words
        self.k = words.knowledge
        self.seed = seed
        self.ledger = Ledger()

    # ------------------------------------------------------------------ plumbing

    def uuid_for(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join((self.seed, *parts))))

    def source(self, reference_id: str) -> Source:
        reference = self.k.references[reference_id]
        return Source(label=reference.label[:200], url=reference.url)

    def override_reasons(self) -> list[OverrideReason]:
        return [
            OverrideReason(system=OVERRIDE_REASON_SYSTEM, code=r["code"], display=r["display"][self.w.locale])
            for r in self.k.messages["override_reasons"]
        ]

    def card(self, key: str, *, summary: str, indicator: str, lines: list[str], extension: dict[str, Any],
             reference: str, suggestions: list[Suggestion] | None = None) -> Card:
        if len(summary) > SUMMARY_MAX_CHARS:
            summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
        return Card(
            uuid=self.uuid_for("card", key),
            summary=summary,
            detail=fit_detail(lines),
            indicator=indicator,
            source=self.source(reference),
            suggestions=suggestions or None,
            selectionBehavior="any" if suggestions else None,
            overrideReasons=self.override_reasons() if indicator in {"warning", "critical"} else None,
            extension={EXTENSION_KEY: extension},
        )

    def bold(self, heading: str, text: str = "") -> str:
        return f"**{self.w.msg('heading', heading)}{self.w.colon()}** {text}".rstrip()

    def facts_lines(self, evidence: list[Evidence], limit: int = _FACTS) -> list[str]:
        return [f"- {line}" for line in evidence_lines(self.w, evidence, self.ledger, limit)]

    def values(self) -> dict[str, str]:
        """Values flag summaries may quote, formatted for this locale."""
        found: dict[str, str] = {}
        product = self.facts.derived.get("ca_x_p")
        if product is not None:
            found["ca_x_p"] = self.w.quantity("ca_x_p", product.value)
        calcium = self.facts.derived.get("calcium_corrected") or self.facts.latest("calcium_total")
        if calcium is not None and calcium.value is not None:
            found["calcium"] = self.w.quantity("calcium_total", calcium.value)
        phosphate = self.facts.latest("phosphate")
        if phosphate is not None and phosphate.value is not None:
            found["phosphate"] = self.w.quantity("phosphate", phosphate.value, phosphate.provenance.original)
        for key in ("ca_x_p", "calcium", "phosphate"):
            found.setdefault(key, "—")
        return found

    def flag_summary(self, hit: FlagHit) -> str:
        definition: FlagDefinition | RiskDefinition = self.definition(hit)
        return definition.summary.get(self.w.locale).format(**self.values())

    def not_quoted(self, evidence: list[Evidence], alerts: list[FlagHit]) -> list[Evidence]:
        """The evidence less the Ca x P that an "Also:" line of these alerts quotes: one value, said once."""
        if not any("{ca_x_p}" in self.definition(hit).summary.get(self.w.locale) for hit in alerts):
            return evidence
        return [e for e in evidence if not (e.kind == "derived" and e.concept == "ca_x_p")]

    def definition(self, hit: FlagHit) -> FlagDefinition | RiskDefinition:
        if hit.is_risk:
            return next(r for r in self.k.risks if r.id == hit.id)
        return next(f for f in self.k.flags if f.id == hit.id)

    # ------------------------------------------------------------------ cards

    def flag_card(self, lead: FlagHit, also: list[FlagHit]) -> Card:
        definition = self.definition(lead)
        lines: list[str] = []
        if isinstance(definition, FlagDefinition):
            action = (definition.action if lead.action_variant is None
                      else definition.action_variants[lead.action_variant].action)
            lines.append(self.bold("do", action.get(self.w.locale)))
        lines += self.facts_lines(self.not_quoted(list(lead.evidence), also))
        lines += [self.bold("also", self.flag_summary(other)) for other in also]
        if lead.basis == "suspected":
            lines.append(f"_{self.w.msg('text', 'provisional_basis')}_")
        extension: dict[str, Any]
        if lead.is_risk:
            extension = {"kind": "risk", "risk": lead.id}
            if lead.risk_factors:
                extension["factors"] = list(lead.risk_factors)
        else:
            extension = {"kind": "red-flag", "flag": lead.id}
            if also:
                extension["also"] = [h.id for h in also]
            if lead.basis:
                extension["basis"] = lead.basis
        indicator = "info" if lead.is_risk else lead.indicator
        return self.card(f"{extension['kind']}:{lead.id}", summary=self.flag_summary(lead), indicator=indicator,
                         lines=lines, extension=extension, reference=definition.reference)

    def decisive_evidence(self) -> list[Evidence]:
        """The calcinosis finding, then the evidence of the rules that most support the suggested subtype."""
        a = self.a
        target = a.subtype if a.subtype != "indeterminate" else (a.differential[0][0] if a.differential else "")
        supporting = sorted((h for h in a.hits if h.rule.points.get(target, 0) > 0),
                            key=lambda h: -h.rule.points.get(target, 0))
        evidence = list(a.calcinosis)
        for hit in supporting:
            evidence += list(hit.evidence[:2])
        return evidence

    def subtype_card(self, folded: list[FlagHit]) -> Card:
        a = self.a
        if a.subtype == "indeterminate":
            first, second = a.differential[0][0], a.differential[1][0]
            summary = self.w.msg("summary", "indeterminate", first=self.w.msg("subtype_names", first),
                                 second=self.w.msg("subtype_names", second))
        else:
            summary = self.w.msg("summary", "subtype", subtype=self.w.msg("subtype_names", a.subtype))
        lines = [self.bold("why"), *self.facts_lines(self.not_quoted(self.decisive_evidence(), folded))]
        if any(hit.basis == "suspected" for hit in folded):
            # Before the alerts it qualifies: the budget may cut the last lines, never this one.
            lines.append(f"_{self.w.msg('text', 'provisional_basis')}_")
        lines += [self.bold("also", self.flag_summary(hit)) for hit in folded]
        history = evidence_lines(self.w, a.history, self.ledger, 2)
        if history:
            # Each line ends in "(not current)": a critical value outside the look-back window stays visible.
            lines += [f"- {line}" for line in history]
        if self.facts.ckd is not None:
            lines += [self.bold("check", self.discrepancy(d)) for d in self.facts.ckd.superseded[:1]]
        lines += [self.bold("not_recorded", self.w.msg("unknown", u)) for u in a.unknowns
                  if self.w.has("unknown", u) and u != "medications"]
        if a.not_used:
            lines.append(self.bold("not_used", "; ".join(self.not_used_phrases())))
        extension: dict[str, Any] = {
            "kind": "subtype-assessment",
            "subtype": a.subtype,
            "differential": [{"subtype": s, "score": score} for s, score in a.differential],
            "rules": [h.rule.id for h in a.hits],
            "rulesetVersion": a.ruleset_version,
        }
        if folded:
            extension["flags"] = [h.id for h in folded]
        critical_fold = any(h.indicator == "warning" for h in folded)
        indicator = "warning" if a.subtype in {"metastatic", "calciphylaxis"} or critical_fold else "info"
        return self.card("subtype-assessment", summary=summary, indicator=indicator, lines=lines,
                         extension=extension, reference="reiter2011")

    def discrepancy(self, d: StageDiscrepancy) -> str:
        """A coded kidney stage the current eGFR contradicts: the staging used the eGFR (issue 10)."""
        label = self.w.label(d.concept)
        return self.w.msg("text", "stage_discrepancy", condition=label,
                          coded=self.w.date(d.coded) or "?", egfr=self.w.number(d.egfr, 0),
                          date=self.w.date(d.measured) or "?")

    def not_used_phrases(self) -> list[str]:
        phrases = []
        for kind, concept, count, code in self.a.not_used:
            what = self.w.label(concept).lower() if concept else "?"
            phrases.append(self.w.msg("not_used", kind, count=count, what=what, code=md_text(code or "?", 20)))
        return phrases

    def item_name(self, item_id: str) -> str:
        return next(i for i in self.k.workup if i.id == item_id).name.get(self.w.locale)

    def _names(self, names: list[str]) -> str:
        joiner = " et " if self.w.fr else " and "
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + joiner + names[-1]

    def workup_card(self) -> Card | None:
        plan = self.a.workup
        if not plan.missing:
            return None
        items = {i.id: i for i in self.k.workup}
        lines: list[str] = []
        suggestions = []
        for item_id in plan.missing:
            item = items[item_id]
            name = self.item_name(item_id)
            line = f"- **{name}{self.w.colon()}** {item.why.get(self.w.locale)}"
            last = plan.last_value(item_id)
            if last is not None and last.value is not None:
                value = self.w.quantity(last.concept, last.value)
                line += " " + self.w.msg("text", "not_current_value", value=value, date=self.w.date(last.date))
            lines.append(line)
            order = item.order_fr if self.w.fr and item.order_fr else item.order
            suggestion_uuid = self.uuid_for("suggestion", item_id)
            suggestions.append(Suggestion(
                label=self.w.msg("text", "order_label", name=name)[:80],
                uuid=suggestion_uuid,
                actions=[Action(type="create", description=self.w.msg("text", "order_description", name=name),
                                resource=_service_request(suggestion_uuid, order.code, order.display,
                                                          self.facts.patient_id))],
            ))
        if plan.deferred:
            lines.append(self.w.msg("text", "more_tests", names=", ".join(self.item_name(i) for i in plan.deferred)))
        names = [self.item_name(i) for i in plan.missing]
        shown = self._names(names[:3]) + ("…" if len(names) > 3 else "")
        summary = self.w.msg("summary", "missing_workup", names=shown)
        extension = {"kind": "missing-workup", "missing": list(plan.missing)}
        if plan.deferred:
            extension["deferred"] = list(plan.deferred)
        return self.card("missing-workup", summary=summary, indicator="info", lines=lines,
                         extension=extension, reference="reiter2011", suggestions=suggestions)

    def therapy_card(self) -> Card | None:
        plan = self.a.therapy
        if plan is None or not (plan.options or plan.cautions or plan.current or plan.tried):
            return None
        content = TherapyCard(plan, self.k, self.w)
        return self.card("therapy-options", summary=content.summary(), indicator=content.indicator(),
                         lines=content.lines(), extension=content.extension(), reference="bienvenu2014")


# FHIR R4 ``id``: what every ServiceRequest id must match (the template below was validated with another id).
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TEMPLATE_ID, _TEMPLATE_SUBJECT = "template", "Patient/template"


@lru_cache(maxsize=256)
def _service_request_template(code: str, display: str) -> bytes:
    """A work-up item's ServiceRequest, validated with fhir.resources R4B once (the first time it is ordered);
    only ``id`` and ``subject`` differ from one call to the next (issue 14: validating each was 226 µs a call)."""
    resource = ServiceRequest.model_validate(
        {
            "resourceType": "ServiceRequest",
            "id": _TEMPLATE_ID,
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [{"system": _LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": _TEMPLATE_SUBJECT},
        }
    )
    return orjson.dumps(resource.model_dump(mode="json", exclude_none=True))


def _service_request(request_id: str, code: str, display: str, patient_id: str | None) -> dict[str, Any]:
    """A draft, proposed, LOINC-coded R4 ServiceRequest: the validated template with this call's id and patient
    (a Reference's ``reference`` is any string; the id is checked against the FHIR id pattern here)."""
    if not _FHIR_ID.fullmatch(request_id):
        raise ValueError("a ServiceRequest id must match the FHIR id pattern")
    resource: dict[str, Any] = orjson.loads(_service_request_template(code, display))
    resource["id"] = request_id
    resource["subject"]["reference"] = f"Patient/{patient_id}" if patient_id else "Patient/unknown"
    return resource


def _groups(flags: tuple[FlagHit, ...], knowledge: Knowledge) -> dict[str, list[FlagHit]]:
    group_of = {f.id: f.group for f in knowledge.flags}
    grouped: dict[str, list[FlagHit]] = {}
    for hit in flags:
        grouped.setdefault(group_of.get(hit.id, hit.id), []).append(hit)
    return grouped


def render_cards(
    assessment: Assessment, facts: PatientFacts, *, locale: str, seed: str, knowledge: Knowledge | None = None
) -> list[Card]:
    """Cards in display order: critical red flags, subtype (or other alerts), risk, work-up, therapy."""
    if assessment.silent:
        return []
    renderer = _Renderer(assessment, facts, Words(knowledge or load_knowledge(), locale), seed)
    cards: list[Card] = []
    folded: list[FlagHit] = []
    alerts: list[FlagHit] = []
    for members in _groups(assessment.flags, renderer.k).values():
        critical = [h for h in members if h.indicator == "critical"]
        others = [h for h in members if h not in critical[:1]]
        if critical:
            cards.append(renderer.flag_card(critical[0], others))
        elif assessment.calcinosis_present:
            folded += members
        else:
            alerts += members
    if assessment.calcinosis_present:
        cards.append(renderer.subtype_card(folded))
    elif alerts:
        cards.append(renderer.flag_card(alerts[0], alerts[1:]))
    cards += [renderer.flag_card(hit, []) for hit in assessment.risks]
    for extra in (renderer.workup_card(), renderer.therapy_card()):
        if extra is not None:
            cards.append(extra)
    return cards
