"""Renders an ``Assessment`` as CDS Hooks 2.0 cards, in English or French.

Every card has a ``uuid`` (for feedback), a ``source`` naming the knowledge reference, GitHub-flavoured
markdown ``detail`` that lists each input with value, unit, date and source resource, the rule in plain
language and its citation (FDA non-device CDS criterion 4, security brief §3.6), and a machine-readable
``extension["calcinosis-cds"]`` object whose shapes are the public contract documented in README.

Card and suggestion uuids are derived from the hook instance (uuid5): the same call always renders the
same cards, and two calls never share a uuid.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

from fhir_mappings.facts import PatientFacts
from fhir_mappings.terminology import concept_display
from hooks.engine.assessment import Assessment, FlagHit
from hooks.engine.evidence import Evidence
from hooks.engine.knowledge import FlagDefinition, Knowledge, RiskDefinition, load_knowledge
from hooks.models import SUMMARY_MAX_CHARS, Action, Card, OverrideReason, Source, Suggestion

__all__ = ["EXTENSION_KEY", "OVERRIDE_REASON_SYSTEM", "render_cards"]

EXTENSION_KEY = "calcinosis-cds"
# Our own code system for override reasons (CDS Hooks #overridereason lets the service define them).
OVERRIDE_REASON_SYSTEM = "urn:calcinosis-cds:override-reason"
_LOINC = "http://loinc.org"
_SOURCE_LABEL = {"en": "Calcinosis CDS", "fr": "Calcinosis CDS"}


def _label(concept: str, locale: str) -> str:
    finding = load_knowledge().messages["finding_kinds"].get(concept)
    if finding is not None:
        return str(finding[locale])
    try:
        return concept_display(concept, "fr" if locale == "fr" else "en")
    except LookupError:  # a finding kind or derived value is not a terminology concept
        return concept.replace("_", " ")


def _number(value: float, locale: str) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.0f}"
    return text.replace(".", ",") if locale == "fr" else text


def _evidence_line(item: Evidence, locale: str) -> str:
    parts = [f"**{_label(item.concept, locale)}**"]
    if item.value is not None:
        parts.append(f"{_number(item.value, locale)} {item.unit or ''}".strip())
    if item.text and item.kind in {"lab", "derived"} and item.text != parts[-1]:
        parts.append(f"({item.text})")
    elif item.text and item.kind not in {"lab", "derived"}:
        parts.append(f"— {item.text}")
    if item.date:
        parts.append(item.date.date().isoformat())
    if item.reference:
        parts.append(f"`{item.reference}`")
    if item.flags:
        parts.append("[" + ", ".join(item.flags) + "]")
    return "- " + " ".join(parts)


def _evidence_block(items: Iterable[Evidence], locale: str) -> str:
    lines = [_evidence_line(item, locale) for item in items]
    return "\n".join(lines)


class _Renderer:
    def __init__(self, assessment: Assessment, facts: PatientFacts, locale: str, seed: str, knowledge: Knowledge):
        self.a = assessment
        self.facts = facts
        self.locale = locale
        self.seed = seed
        self.k = knowledge

    def msg(self, section: str, key: str, **values: Any) -> str:
        return self.k.message(section, key, self.locale).format(**values)

    def subtype_name(self, subtype: str) -> str:
        return self.msg("subtype_names", subtype)

    def uuid_for(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join((self.seed, *parts))))

    def source(self, reference_id: str) -> Source:
        reference = self.k.references[reference_id]
        return Source(label=f"{_SOURCE_LABEL[self.locale]} — {reference.label}"[:200], url=reference.url)

    def override_reasons(self) -> list[OverrideReason]:
        return [
            OverrideReason(system=OVERRIDE_REASON_SYSTEM, code=r["code"], display=r["display"][self.locale])
            for r in self.k.messages["override_reasons"]
        ]

    def footer(self) -> str:
        lines = []
        if self.a.unusable:
            lines.append(f"**{self.msg('heading', 'missing_inputs')}**\n")
            lines += [f"- {issue}" for issue in self.a.unusable[:10]]
            lines.append("")
        lines.append(f"_{self.msg('text', 'ruleset', version=self.a.ruleset_version, hash=self.a.ruleset_hash[:12])}_")
        lines.append(f"_{self.msg('text', 'not_advice')}_")
        return "\n".join(lines)

    def card(self, kind_key: str, *, summary: str, indicator: str, detail: str, extension: dict[str, Any],
             reference: str, suggestions: list[Suggestion] | None = None) -> Card:
        if len(summary) > SUMMARY_MAX_CHARS:
            summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
        return Card(
            uuid=self.uuid_for("card", kind_key),
            summary=summary,
            detail=detail + "\n\n" + self.footer(),
            indicator=indicator,
            source=self.source(reference),
            suggestions=suggestions or None,
            selectionBehavior="any" if suggestions else None,
            overrideReasons=self.override_reasons() if indicator in {"warning", "critical"} else None,
            extension={EXTENSION_KEY: extension},
        )

    # ------------------------------------------------------------------ cards

    def flag_card(self, hit: FlagHit) -> Card:
        definition: RiskDefinition | FlagDefinition
        if hit.is_risk:
            definition = next(r for r in self.k.risks if r.id == hit.id)
            action_text = ""
            indicator = "info"
            extension: dict[str, Any] = {"kind": "risk", "risk": hit.id}
        else:
            flag = next(f for f in self.k.flags if f.id == hit.id)
            definition = flag
            action_text = f"**{self.msg('heading', 'action')}:** {flag.action.get(self.locale)}\n\n"
            indicator = hit.indicator
            extension = {"kind": "red-flag", "flag": hit.id}
        summary = definition.summary.get(self.locale).format(**self.summary_values())
        lines = [action_text + f"**{self.msg('heading', 'rule')}:** {definition.rule_text.get(self.locale)}"]
        if hit.risk_factors:
            lines.append(f"\n**{self.msg('heading', 'risk_factors')}:** " + ", ".join(hit.risk_factors))
        lines.append(f"\n**{self.msg('heading', 'evidence')}**\n\n" + _evidence_block(hit.evidence, self.locale))
        lines.append(f"\n_{definition.basis}_")
        return self.card(f"{extension['kind']}:{hit.id}", summary=summary, indicator=indicator,
                         detail="\n".join(lines), extension=extension, reference=definition.reference)

    def summary_values(self) -> dict[str, str]:
        values: dict[str, str] = {}
        product = self.facts.derived.get("ca_x_p")
        if product is not None:
            values["ca_x_p"] = f"{_number(product.value, self.locale)} mg²/dL²"
        calcium = self.facts.derived.get("calcium_corrected")
        latest_ca = self.facts.latest("calcium_total")
        if calcium is not None:
            values["calcium"] = f"{_number(calcium.value, self.locale)} mg/dL"
        elif latest_ca is not None and latest_ca.value is not None:
            values["calcium"] = f"{_number(latest_ca.value, self.locale)} mg/dL"
        phosphate = self.facts.latest("phosphate")
        if phosphate is not None and phosphate.value is not None:
            values["phosphate"] = f"{_number(phosphate.value, self.locale)} mg/dL"
        for key in ("ca_x_p", "calcium", "phosphate"):
            values.setdefault(key, "—")
        return values

    def subtype_card(self) -> Card:
        a = self.a
        if a.subtype == "indeterminate":
            first, second = a.differential[0][0], a.differential[1][0]
            summary = self.msg("summary", "indeterminate", first=self.subtype_name(first),
                               second=self.subtype_name(second))
        else:
            summary = self.msg("summary", "subtype", subtype=self.subtype_name(a.subtype),
                               score=a.scores[a.subtype], runner_up=a.differential[1][1])
        lines = [f"**{self.msg('heading', 'differential')}**\n", "| | |", "|---|---|"]
        lines += [f"| {self.subtype_name(s)} | {score} |" for s, score in a.differential]
        lines.append("\n" + self.msg("text", "subtype_basis", min_score=self.k.min_score, min_lead=self.k.min_lead))
        gates = []
        if a.metabolic:
            gates.append(self.msg("text", "gate_metabolic"))
        if not a.workup_complete and not a.metabolic:
            gates.append(self.msg("text", "gate_workup", missing=", ".join(a.missing_for_idiopathic)))
        if a.calciphylaxis_kept:
            gates.append(self.msg("text", "calciphylaxis_kept"))
        if gates:
            lines.append(f"\n**{self.msg('heading', 'gates')}**\n")
            lines += [f"- {g}" for g in gates]
        lines.append(f"\n**{self.msg('heading', 'evidence')}**\n\n" + _evidence_block(a.calcinosis, self.locale))
        lines.append(f"\n**{self.msg('heading', 'rules')}**\n")
        if not a.hits:
            lines.append(self.msg("text", "no_points"))
        for hit in a.hits:
            points = ", ".join(f"{self.subtype_name(s)} {p:+d}" for s, p in hit.rule.points.items())
            lines.append(f"- **{hit.rule.id}** {hit.rule.finding.get(self.locale)} ({points}) — _{hit.rule.basis}_")
            lines += ["  " + line for line in _evidence_block(hit.evidence, self.locale).splitlines()]
        extension = {
            "kind": "subtype-assessment",
            "subtype": a.subtype,
            "differential": [{"subtype": s, "score": score} for s, score in a.differential],
            "rules": [h.rule.id for h in a.hits],
            "rulesetVersion": a.ruleset_version,
        }
        indicator = "warning" if a.subtype in {"metastatic", "calciphylaxis"} else "info"
        return self.card("subtype-assessment", summary=summary, indicator=indicator, detail="\n".join(lines),
                         extension=extension, reference="reiter2011")

    def workup_card(self) -> Card | None:
        if not self.a.missing_workup:
            return None
        items = {i.id: i for i in self.k.workup}
        suggestions = []
        lines = [f"**{self.msg('heading', 'missing')}**\n"]
        for item_id in self.a.missing_workup:
            item = items[item_id]
            order = item.order_fr if self.locale == "fr" and item.order_fr else item.order
            name = _label(item.satisfied_by[0], self.locale)
            lines.append(f"- **{item_id}** ({name}, LOINC {order.code}): {item.why.get(self.locale)}")
            suggestion_uuid = self.uuid_for("suggestion", item_id)
            suggestions.append(
                Suggestion(
                    label=self.msg("text", "order_label", name=name)[:80],
                    uuid=suggestion_uuid,
                    actions=[
                        Action(
                            type="create",
                            description=self.msg("text", "order_description", name=name),
                            resource=_service_request(suggestion_uuid, order.code, order.display,
                                                      self.facts.patient_id),
                        )
                    ],
                )
            )
        lines.append(f"\n**{self.msg('heading', 'advisory')}**\n")
        lines += [f"- **{a.id}**: {a.text.get(self.locale)}" for a in self.k.advisory]
        summary = self.msg("summary", "missing_workup", count=len(self.a.missing_workup))
        extension = {"kind": "missing-workup", "missing": list(self.a.missing_workup)}
        return self.card("missing-workup", summary=summary, indicator="info", detail="\n".join(lines),
                         extension=extension, reference="reiter2011", suggestions=suggestions)

    def therapy_card(self) -> Card | None:
        plan = self.a.therapy
        if plan is None or not (plan.options or plan.cautions):
            return None
        lines = [self.msg("text", "extent", extent=self.msg("extent_names", plan.extent)),
                 f"\n**{self.msg('heading', 'options')}**\n"]
        for index, option_id in enumerate(plan.options, start=1):
            option = self.k.option(option_id)
            lines.append(f"{index}. **{option_id}** — {option.text.get(self.locale)} "
                         f"(evidence {option.evidence}; _{option.basis}_)")
        if plan.cautions:
            lines.append(f"\n**{self.msg('heading', 'cautions')}**\n")
            cautions = {c.id: c for c in self.k.cautions}
            for hit in plan.cautions:
                caution = cautions[hit.caution_id]
                status = self.msg("text", "contraindicated" if hit.contraindicates else "kept_with_caution")
                lines.append(f"- **{hit.option}** ({status}; {hit.reason}): {caution.text.get(self.locale)} "
                             f"— _{caution.basis}_")
                lines += ["  " + line for line in _evidence_block(hit.evidence, self.locale).splitlines()]
        lines.append("\n_" + self.msg("text", "therapy_evidence_note") + "_")
        summary = self.msg("summary", "therapy", subtype=self.subtype_name(plan.subtype), count=len(plan.options),
                           cautions=len(plan.cautions))
        extension = {
            "kind": "therapy-options",
            "options": list(plan.options),
            "cautions": [{"option": c.option, "reason": c.reason} for c in plan.cautions],
        }
        indicator = "warning" if plan.touches_current_medication else "info"
        return self.card("therapy-options", summary=summary, indicator=indicator, detail="\n".join(lines),
                         extension=extension, reference="bienvenu2014")


def _service_request(request_id: str, code: str, display: str, patient_id: str | None) -> dict[str, Any]:
    """A draft, proposed, LOINC-coded R4 ServiceRequest, validated with fhir.resources R4B before it is sent."""
    resource = ServiceRequest.model_validate(
        {
            "resourceType": "ServiceRequest",
            "id": request_id,
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [{"system": _LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{patient_id}" if patient_id else "Patient/unknown"},
        }
    )
    dumped: dict[str, Any] = resource.model_dump(mode="json", exclude_none=True)
    return dumped


def render_cards(
    assessment: Assessment, facts: PatientFacts, *, locale: str, seed: str, knowledge: Knowledge | None = None
) -> list[Card]:
    """Cards in display order: red flags, subtype, risk, missing work-up, therapy. Empty when silent."""
    if assessment.silent:
        return []
    renderer = _Renderer(assessment, facts, locale, seed, knowledge or load_knowledge())
    cards = [renderer.flag_card(hit) for hit in sorted(assessment.flags, key=lambda f: f.indicator != "critical")]
    if assessment.calcinosis_present:
        cards.append(renderer.subtype_card())
    cards += [renderer.flag_card(hit) for hit in assessment.risks]
    for extra in (renderer.workup_card(), renderer.therapy_card()):
        if extra is not None:
            cards.append(extra)
    return cards
