"""``audit stats``: cards shown, accepted and overridden per rule id and per card kind (security brief §3.5).

An override rate means something only where the clinician had a choice: a card that offers suggestions can
be accepted (a suggestion taken) or overridden. A card without suggestions (a red flag, a risk card) can
only be dismissed, so every feedback on it is "overridden" and a rate would always read 100 %. Such cards
are counted (shown, dismissed) but get no rate; the rate is overridden / (accepted + overridden) over the
feedback on cards that offered suggestions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from hooks.audit.export import card_kind
from hooks.audit.schema import StoredRow

__all__ = ["CardStats", "card_rules", "card_stats"]

_EXTENSION = "calcinosis-cds"
_UNATTRIBUTED = "(unattributed)"
NO_CHOICE = "n/a (no suggestions)"


def card_rules(card: Mapping[str, Any], rules_fired: list[str]) -> list[str]:
    """The rule ids behind one card: its extension's ``rules``/``rule``/``ruleId``, or the red-flag/risk id
    the engine puts in ``flag``/``risk`` (hooks/engine/cards.py), else the call's only fired rule."""
    extension = card.get("extension")
    ours = extension.get(_EXTENSION) if isinstance(extension, Mapping) else None
    if isinstance(ours, Mapping):
        for key in ("rules", "rule", "ruleId", "flag", "risk"):
            value = ours.get(key)
            if isinstance(value, str) and value:
                return [value]
            if isinstance(value, list) and value:
                return [str(item) for item in value]
    # Attributing a card to every rule the call fired would inflate each rule's counts.
    return list(rules_fired) if len(rules_fired) == 1 else [_UNATTRIBUTED]


@dataclass(slots=True)
class CardStats:
    shown: Counter[str] = field(default_factory=Counter)
    # Shown cards that offered at least one suggestion: the ones that could be accepted or overridden.
    with_choice: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    overridden: Counter[str] = field(default_factory=Counter)
    # Overrides of cards that offered suggestions (the numerator of the rate).
    overridden_with_choice: Counter[str] = field(default_factory=Counter)

    def override_rate(self, name: str) -> str:
        if not self.with_choice[name]:
            return NO_CHOICE
        rated = self.accepted[name] + self.overridden_with_choice[name]
        return f"{self.overridden_with_choice[name] / rated:.0%}" if rated else "—"

    def table(self, title: str) -> list[str]:
        lines = [f"| {title} | shown | with suggestions | accepted | overridden | override rate |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name in sorted(set(self.shown) | set(self.accepted) | set(self.overridden)):
            lines.append(
                f"| {name} | {self.shown[name]} | {self.with_choice[name]} | {self.accepted[name]} | "
                f"{self.overridden[name]} | {self.override_rate(name)} |"
            )
        return lines


def _document(row: StoredRow) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(row["document"])
    return document


def card_stats(calls: Iterable[StoredRow], feedback: Iterable[StoredRow]) -> tuple[CardStats, CardStats]:
    """(per rule id, per card kind) for cards shown by ``calls`` and the feedback given on them."""
    by_rule, by_kind = CardStats(), CardStats()
    labels: dict[str, tuple[list[str], str, bool]] = {}
    for row in calls:
        if row["http_status"] != 200:
            continue
        document = _document(row)
        for card in document.get("cards", ()):
            rules, kind = card_rules(card, document.get("rules_fired", [])), card_kind(card)
            choice = bool(card.get("suggestions"))
            if card.get("uuid"):  # a card without a uuid can be counted as shown but never fed back on
                labels[str(card["uuid"])] = (rules, kind, choice)
            for stats, names in ((by_kind, [kind]), (by_rule, rules)):
                for name in names:
                    stats.shown[name] += 1
                    stats.with_choice[name] += choice
    for row in feedback:
        if row["card_uuid"] not in labels or not row["hook_instance"]:
            continue
        rules, kind, choice = labels[row["card_uuid"]]
        outcome = _document(row)["outcome"]
        for stats, names in ((by_kind, [kind]), (by_rule, rules)):
            for name in names:
                getattr(stats, outcome)[name] += 1
                if outcome == "overridden" and choice:
                    stats.overridden_with_choice[name] += 1
    return by_rule, by_kind
