"""Helpers for the order-check tests (issue 15): FHIR resources and draft orders -> the cards a clinician sees."""

from __future__ import annotations

from typing import Any

from hooks.engine.cards import EXTENSION_KEY
from hooks.engine.order_service import assess_orders, read_orders
from hooks.models import Card
from tests.fhir_builders import NOW, condition, lab, medication, patient, when

LOCALES = ["en", "fr"]
WOMAN_32 = "1994-03-01"  # 32 on 2026-11-21 (tests.fhir_builders.NOW): of child-bearing age (S27)


def pregnant_woman() -> list[dict[str, Any]]:
    return [patient("p1", birth=WOMAN_32), condition("Z34.00")]


def man(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1", birth="1958-02-01", gender="male"), *extra]


def egfr(value: float) -> dict[str, Any]:
    return lab("98979-8", value, "mL/min/{1.73_m2}")


def not_recorded(card: Card) -> str:
    """The first fact the card says is not recorded (``extension.notRecorded``)."""
    assert card.extension is not None
    return str(card.extension[EXTENSION_KEY].get("notRecorded"))


def draft(code: str | None, system: str = "atc", *, pid: str = "p1", rid: str,
          text: str | None = None) -> dict[str, Any]:
    """A draft MedicationRequest as the EHR sends it in context.draftOrders."""
    return medication(code, system, text=text, status="draft", days_ago=0, pid=pid, rid=rid)


def draft_bundle(*orders: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}


def order_cards(resources: list[dict[str, Any]], *orders: dict[str, Any], pid: str = "p1", locale: str = "en",
                hook: str = "order-sign", selections: list[str] | None = None,
                unavailable: tuple[str, ...] = ()) -> list[Card]:
    """``unavailable``: the prefetch keys the EHR could not give ("medications" came as an OperationOutcome)."""
    context = {"patientId": pid, "draftOrders": draft_bundle(*orders), "selections": selections or []}
    to_check, every = read_orders(hook, context, ("en", "fr"))
    cards, _ = assess_orders(resources, patient_id=pid, to_check=to_check, all_drafts=every, now=NOW,
                             locale=locale, seed="orders", unavailable=unavailable)
    return cards


def with_route(order: dict[str, Any], route: str) -> dict[str, Any]:
    """The order with dosageInstruction.route as free text ("IV", "per os")."""
    return {**order, "dosageInstruction": [{"route": {"text": route}}]}


def stopped(order: dict[str, Any], days_ago: float) -> dict[str, Any]:
    """The order completed ``days_ago`` days before NOW (its period ended then)."""
    end = when(days_ago)
    return {**order, "status": "completed", "dispenseRequest": {"validityPeriod": {"start": when(days_ago + 1),
                                                                                   "end": end}}}


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
