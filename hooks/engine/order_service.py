"""An order-select / order-sign call on the engine (issue 15): the drafts to check, facts built once, the
assessment of those facts (for its rules and red flags), the order checks and their cards.

Used by the ``calcinosis-medication-safety`` service and by ``calcinosis-cds assess --hook order-sign``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fhir_mappings import MappingOptions
from fhir_mappings.draft_orders import DraftOrder, DraftOrderError, read_draft_orders, selected
from hooks.errors import BadRequest
from hooks.models import Card, CdsResponse
from hooks.registry import HookOutcome

__all__ = ["assess_orders", "read_orders"]


def read_orders(hook: str, context: Mapping[str, Any], locales: tuple[str, ...]) -> tuple[list[DraftOrder],
                                                                                        list[DraftOrder]]:
    """(the drafts to check, every draft): order-select checks its selections, order-sign every draft."""
    patient_id = str(context["patientId"])
    try:
        drafts = read_draft_orders(context["draftOrders"], patient_id, locales)
        chosen = selected(drafts, context["selections"]) if hook == "order-select" else drafts
    except DraftOrderError as error:
        raise BadRequest(str(error), expression=[error.expression]) from None
    return chosen, drafts


def assess_orders(
    resources: Iterable[dict[str, Any]],
    *,
    patient_id: str,
    to_check: Sequence[DraftOrder],
    all_drafts: Sequence[DraftOrder],
    now: datetime,
    locale: str,
    seed: str,
    options: MappingOptions | None = None,
    unavailable: Iterable[str] = (),
    patient_aliases: Iterable[str] = (),
    encounter_id: str | None = None,
) -> tuple[list[Card], HookOutcome]:
    """The cards for these drafts, and what the audit keeps (check ids, facts used, knowledge hash)."""
    from hooks.engine.assessment import assess
    from hooks.engine.cards.order_card import NOT_READ_CHECK, render_order_cards
    from hooks.engine.evidence import Evidence
    from hooks.engine.order_checks import check_orders
    from hooks.engine.order_knowledge import load_order_checks
    from hooks.engine.service import facts_from_resources

    knowledge = load_order_checks()
    silent = HookOutcome(response=CdsResponse(cards=[]), ruleset_version=knowledge.knowledge.version,
                         ruleset_hash=knowledge.content_hash)
    concerned = any(knowledge.concerns(m.concept, m.groups) for d in to_check for m in d.medications)
    # A drug order the service could not read was not checked: the card says so (never a silent pass).
    unread = [d for d in to_check if d.is_order and d.not_identified is not None]
    if not concerned and not unread:
        return [], silent
    facts = facts_from_resources(resources, patient_id=patient_id, now=now, options=options,
                                 patient_aliases=patient_aliases, unavailable=unavailable)
    if facts.deceased:
        return [], silent
    findings = (check_orders(facts, assess(facts, knowledge.knowledge), to_check, all_drafts, knowledge)
                if concerned else [])
    cards = render_order_cards(findings, facts, knowledge, locale=locale, seed=seed, encounter_id=encounter_id,
                               unread=unread, orders=len(all_drafts))
    not_read = [Evidence(kind="data-issue", concept=issue.kind, text=issue.detail, reference=d.shown_as)
                for d in unread for issue in d.issues]
    outcome = HookOutcome(
        response=CdsResponse(cards=cards),
        rules_fired=list(dict.fromkeys([*(f"order:{f.check.id}" for f in findings),
                                        *([f"order:{NOT_READ_CHECK}"] if unread else [])])),
        facts_used=[*(e.to_dict() for f in findings for e in f.evidence), *(e.to_dict() for e in not_read)],
        ruleset_version=knowledge.knowledge.version,
        ruleset_hash=knowledge.content_hash,
    )
    return cards, outcome
