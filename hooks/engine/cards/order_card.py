"""Order findings as actionable CDS Hooks 2.0 cards (issue 15), in English or French.

Each card names the draft order (by our own label of the drug: never the sender's text, which stays in the
audit trail), gives the reason and the two or three facts behind it (value, unit, date), and offers
suggestions per CDS Hooks 2.0: a ``delete`` action on the draft (``resourceId`` = its relative reference),
and, where the knowledge names one, the safer alternative as a ``create`` of a draft MedicationRequest built
and validated with fhir.resources R4B (delete and create in one suggestion: a swap). Cards carry
``overrideReasons`` and ``extension["calcinosis-cds"] = {"kind": "order-safety", "check": id, "order": ref}``.
A drug order whose drug could not be identified gets an ``info`` card instead (``check: draft-not-read``,
``notRead``: why), named by its place in the signing: it was not checked, and silence would say it was.
The budgets of the patient-view cards apply (summary under 140 characters, detail within 600 characters).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest

from fhir_mappings.draft_orders import DraftOrder
from fhir_mappings.facts import PatientFacts
from fhir_mappings.terminology import lookup
from hooks.engine.cards.lines import Ledger, evidence_lines
from hooks.engine.cards.render import EXTENSION_KEY, OVERRIDE_REASON_SYSTEM, fit_detail
from hooks.engine.cards.text import Words
from hooks.engine.order_checks import OrderFinding
from hooks.engine.order_knowledge import Alternative, OrderKnowledge, UnknownFact
from hooks.models import SUMMARY_MAX_CHARS, Action, Card, OverrideReason, Source, Suggestion

__all__ = ["NOT_READ_CHECK", "ORDER_SAFETY_KIND", "render_order_cards"]

ORDER_SAFETY_KIND = "order-safety"
# The extension's "check" of the card for a draft whose drug could not be read (public, as the check ids are).
NOT_READ_CHECK = "draft-not-read"
_FACTS = 3


def _mid_sentence(label: str) -> str:
    """"Clarithromycin" inside a sentence is "clarithromycin"; an acronym ("IVIG") stays as it is."""
    return label[:1].lower() + label[1:] if label[1:2].islower() else label


class _OrderRenderer:
    def __init__(self, knowledge: OrderKnowledge, words: Words, facts: PatientFacts, seed: str,
                 encounter_id: str | None) -> None:
        self.k = knowledge
        self.w = words
        self.facts = facts
        self.seed = seed
        self.encounter_id = encounter_id
        self.ledger = Ledger()

    def uuid_for(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join((self.seed, *parts))))

    def msg(self, key: str, **values: str) -> str:
        return self.k.message(key, self.w.locale, **values)

    def bold(self, heading: str, text: str) -> str:
        return f"**{self.msg(heading)}{self.w.colon()}** {text}"

    def unknown_words(self, fact: UnknownFact, section: str, order: str) -> str:
        own = fact.summary if section == "unknown_summary" else fact.reason
        if own is not None:
            return own.get(self.w.locale).format(order=order)
        return self.k.unknown_message(section, fact.fact, self.w.locale, order=order)

    def draft_label(self, finding: OrderFinding) -> str:
        """The draft's whole product: every ingredient recognised in it ("Aspirin / calcium carbonate")."""
        labels = dict.fromkeys(self.w.drug(m.concept, m.route, m.text) for m in finding.draft.medications)
        return " / ".join(labels) if labels else self.w.label(finding.drug.concept)

    def texts(self, finding: OrderFinding, order_label: str, partner_label: str) -> tuple[str, list[str]]:
        """(the summary, the reason lines)."""
        check, locale = finding.check, self.w.locale
        if finding.unknown:
            summary = self.unknown_words(finding.unknown[0], "unknown_summary", order_label)
            reasons = [self.unknown_words(f, "unknown_reason", order_label) for f in finding.unknown]
            return summary, [self.bold("not_recorded", " ".join(reasons))]
        if finding.without_partner and check.without_partner is not None:
            return (check.without_partner.summary.get(locale).format(order=order_label),
                    [self.bold("why", check.without_partner.reason.get(locale))])
        chosen = check.variants[finding.variant] if finding.variant is not None else None
        summary_text = chosen.summary if chosen is not None and chosen.summary is not None else check.summary
        if (check.duplicate and check.summary_same_class is not None and finding.partner is not None
                and finding.partner.concept != finding.drug.concept):
            summary_text = check.summary_same_class
        if chosen is not None and chosen.reason is not None:
            reason = chosen.reason.get(locale)
        elif finding.reversed and check.reason_reversed is not None:
            reason = check.reason_reversed.get(locale)
        else:
            reason = check.reason.get(locale)
        advice = check.advice
        if (advice is not None and not finding.reversed and (chosen is None or chosen.alternative)
                and any(g in advice.for_order for g in (finding.drug.concept, *finding.drug.groups))):
            reason = f"{reason} {advice.text.get(locale)}"
        summary = summary_text.get(locale).format(order=order_label, partner=partner_label)
        return summary, [self.bold("why", reason.format(partner=partner_label))]

    def card(self, finding: OrderFinding) -> Card:
        check = finding.check
        drug_label = self.draft_label(finding)
        order_label = self.w.label(finding.order_concept) if finding.reversed else drug_label
        partner = finding.drug if finding.reversed else finding.partner
        partner_label = (_mid_sentence(self.w.drug(partner.concept, partner.route, partner.text))
                         if partner is not None else "")
        lines = [self.bold("order", f"{drug_label} ({self.msg('draft')})")]
        summary, reason_lines = self.texts(finding, order_label, partner_label)
        lines += reason_lines
        lines += [f"- {line}" for line in evidence_lines(self.w, finding.evidence, self.ledger, _FACTS)]
        if finding.route_unknown:
            lines.append(self.msg("route_unknown"))
        weight_named = any(f.fact == "weight" for f in finding.unknown)  # its own words already say it
        if not weight_named and any(e.concept == "renal_estimate" and e.text == "egfr-approximation"
                                    for e in finding.evidence):
            lines.append(self.msg("approximate_renal"))
        if len(summary) > SUMMARY_MAX_CHARS:
            summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
        suggestions = self.suggestions(finding, drug_label)
        reference = self.k.references[check.reference]
        extension: dict[str, Any] = {"kind": ORDER_SAFETY_KIND, "check": check.id, "order": finding.draft.shown_as}
        if finding.unknown_fact is not None:
            extension["notRecorded"] = finding.unknown_fact
            if len(finding.unknown) > 1:
                extension["notRecordedAll"] = [f.fact for f in finding.unknown]
        if finding.without_partner:
            extension["withoutPartner"] = True
        return Card(
            uuid=self.uuid_for("card", check.id, extension["order"]),
            summary=summary,
            detail=fit_detail(lines),
            indicator=finding.indicator,
            source=Source(label=reference.label[:200], url=reference.url),
            suggestions=suggestions or None,
            selectionBehavior="at-most-one" if suggestions else None,
            overrideReasons=[
                OverrideReason(system=OVERRIDE_REASON_SYSTEM, code=r["code"], display=r["display"][self.w.locale])
                for r in self.k.knowledge.messages["override_reasons"]
            ],
            extension={EXTENSION_KEY: extension},
        )

    def suggestions(self, finding: OrderFinding, drug_label: str) -> list[Suggestion]:
        draft_ref = finding.draft.reference
        delete = (Action(type="delete", description=self.msg("remove_action"), resourceId=draft_ref)
                  if draft_ref else None)
        found: list[Suggestion] = []
        alternative = finding.alternative
        if alternative is not None:
            name = _mid_sentence(self.w.label(alternative.concept))
            key = self.uuid_for("suggestion", finding.check.id, draft_ref or "", "replace")
            create = Action(type="create", description=self.msg("create_action", alternative=name),
                            resource=self.alternative_request(key, alternative, name))
            found.append(Suggestion(label=self.msg("replace", alternative=name)[:80], uuid=key,
                                    actions=[a for a in (delete, create) if a is not None]))
        if finding.suggest_delete and delete is not None:
            found.append(Suggestion(label=self.msg("remove", order=_mid_sentence(drug_label))[:80],
                                    uuid=self.uuid_for("suggestion", finding.check.id, draft_ref or "", "remove"),
                                    actions=[delete]))
        return found

    def alternative_request(self, request_id: str, alternative: Alternative, name: str) -> dict[str, Any]:
        """A draft, proposed R4 MedicationRequest for the alternative, validated with fhir.resources R4B."""
        match = lookup(alternative.system, alternative.code)
        display = match.display if match else name
        body: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": request_id,
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {
                "coding": [{"system": alternative.system, "code": alternative.code, "display": display}],
                "text": name,
            },
            "subject": {"reference": f"Patient/{self.facts.patient_id or 'unknown'}"},
        }
        if self.encounter_id:
            body["encounter"] = {"reference": f"Encounter/{self.encounter_id}"}
        dumped: dict[str, Any] = MedicationRequest.model_validate(body).model_dump(mode="json", exclude_none=True)
        return dumped

    def unread_card(self, draft: DraftOrder, reason: str, orders: int) -> Card:
        """A drug order whose drug could not be identified: its checks were not made, said rather than silent."""
        lines = [self.bold("why", self.msg("not_read_reason"))]
        if orders > 1:
            lines.insert(0, self.bold("order", self.msg("not_read_position", position=str(draft.position),
                                                        orders=str(orders))))
        return Card(
            # The position too: two drafts without id or fullUrl are two cards.
            uuid=self.uuid_for("card", NOT_READ_CHECK, draft.shown_as, str(draft.position)),
            summary=self.msg("not_read_summary"),
            detail=fit_detail(lines),
            indicator="info",
            source=Source(label=self.msg("not_read_source")),
            extension={EXTENSION_KEY: {"kind": ORDER_SAFETY_KIND, "check": NOT_READ_CHECK, "order": draft.shown_as,
                                       "notRead": reason}},
        )


def render_order_cards(findings: Sequence[OrderFinding], facts: PatientFacts, knowledge: OrderKnowledge, *,
                       locale: str, seed: str, unread: Sequence[DraftOrder], orders: int,
                       encounter_id: str | None = None) -> list[Card]:
    """One card per finding, most severe first, then one per draft whose drug could not be identified
    (``DraftOrder.not_identified``; ``orders``: how many orders the Bundle holds, to say which one it is);
    none when no check fires (most orders)."""
    renderer = _OrderRenderer(knowledge, Words(knowledge.knowledge, locale), facts, seed, encounter_id)
    return [*(renderer.card(finding) for finding in findings),
            *(renderer.unread_card(d, d.not_identified, orders) for d in unread if d.not_identified is not None)]
