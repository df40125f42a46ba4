"""Helpers for the order-check tests (issue 15): FHIR resources and draft orders -> the cards a clinician sees."""

from __future__ import annotations

from typing import Any

from hooks.engine.cards import EXTENSION_KEY
from hooks.engine.order_service import assess_orders, read_orders
from hooks.models import Card
from tests.fhir_builders import NOW, medication

LOCALES = ["en", "fr"]


def draft(code: str | None, system: str = "atc", *, pid: str = "p1", rid: str,
          text: str | None = None) -> dict[str, Any]:
    """A draft MedicationRequest as the EHR sends it in context.draftOrders."""
    return medication(code, system, text=text, status="draft", days_ago=0, pid=pid, rid=rid)


def draft_bundle(*orders: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}


def order_cards(resources: list[dict[str, Any]], *orders: dict[str, Any], pid: str = "p1", locale: str = "en",
                hook: str = "order-sign", selections: list[str] | None = None) -> list[Card]:
    context = {"patientId": pid, "draftOrders": draft_bundle(*orders), "selections": selections or []}
    to_check, every = read_orders(hook, context, ("en", "fr"))
    cards, _ = assess_orders(resources, patient_id=pid, to_check=to_check, all_drafts=every, now=NOW,
                             locale=locale, seed="orders")
    return cards


def check_of(card: Card) -> str:
    assert card.extension is not None
    return str(card.extension[EXTENSION_KEY]["check"])


def checks(cards: list[Card]) -> list[str]:
    return [check_of(c) for c in cards]


def the_card(cards: list[Card], check: str) -> Card:
    (card,) = [c for c in cards if check_of(c) == check]
    return card


def text(card: Card) -> str:
    return f"{card.summary}\n{card.detail or ''}"


def actions(card: Card) -> list[tuple[str, str | None]]:
    return [(a.type, a.resourceId) for s in card.suggestions or () for a in s.actions or ()]
