"""``calcinosis-cds knowledge check DIR``, part two: what an edit does to the test patients' cards.

Every fixture patient (FHIR Bundles, ``tests/fixtures/calcinosis`` by default) is assessed twice at the same
instant, with the knowledge the service runs on and with the edited copy, and the cards are compared card
by card: added, removed, another indicator or summary, other detail lines, other rules fired or scores. The
result is a before/after table a reviewer reads before the edit ships; unchanged patients are counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from hooks.engine.assessment import assess
from hooks.engine.cards import EXTENSION_KEY, render_cards
from hooks.engine.knowledge import Knowledge, load_knowledge
from hooks.engine.knowledge_check import check_knowledge
from hooks.engine.offline import bundle_patient
from hooks.engine.service import facts_from_resources

__all__ = ["FIXTURES_NOW", "CardFace", "Change", "Comparison", "cards_with", "compare_fixtures", "fixture_bundles",
           "format_table", "run_check"]

_CELL = 90
# The test patients' dates are written relative to this instant (tests/fixtures/calcinosis/README.md).
FIXTURES_NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CardFace:
    key: str
    indicator: str
    summary: str
    detail: tuple[str, ...]
    rules: tuple[str, ...] = ()
    scores: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    patient: str
    locale: str
    card: str
    before: str
    after: str


@dataclass(slots=True)
class Comparison:
    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failures: int = 0


def _face(card: dict[str, Any]) -> CardFace:
    contract = (card.get("extension") or {}).get(EXTENSION_KEY) or {}
    kind = str(contract.get("kind") or "card")
    key = kind + (f":{contract.get('flag') or contract.get('risk')}" if kind in {"red-flag", "risk"} else "")
    scores = ", ".join(f"{d['subtype']} {d['score']}" for d in contract.get("differential") or ())
    return CardFace(key=key, indicator=str(card.get("indicator")), summary=str(card.get("summary")),
                    detail=tuple(str(card.get("detail") or "").splitlines()), rules=tuple(contract.get("rules") or ()),
                    scores=scores)


def cards_with(knowledge: Knowledge, bundle: Any, now: datetime, locale: str) -> list[CardFace]:
    patient_id, resources, aliases = bundle_patient(bundle)
    facts = facts_from_resources(resources, patient_id=patient_id, now=now, patient_aliases=aliases)
    cards = render_cards(assess(facts, knowledge), facts, locale=locale, seed="knowledge-check", knowledge=knowledge)
    return [_face(card.model_dump(mode="json", exclude_none=True)) for card in cards]


def _faces(knowledge: Knowledge, bundle: Any, now: datetime, locale: str) -> list[CardFace] | str:
    try:
        return cards_with(knowledge, bundle, now, locale)
    except Exception as error:  # the edit broke the engine for this patient: shown in the table, not a traceback
        return f"ERROR {type(error).__name__}: {error}"


def _shown(face: CardFace) -> str:
    return f"{face.indicator}: {face.summary}"


def _card_changes(patient: str, locale: str, before: list[CardFace], after: list[CardFace]) -> list[Change]:
    changes = []
    old, new = {f.key: f for f in before}, {f.key: f for f in after}
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key), new.get(key)
        if was is None or now is None:
            changes.append(Change(patient, locale, key, _shown(was) if was else "—", _shown(now) if now else "—"))
            continue
        if (was.indicator, was.summary) != (now.indicator, now.summary):
            changes.append(Change(patient, locale, key, _shown(was), _shown(now)))
        if was.rules != now.rules:
            changes.append(Change(patient, locale, f"{key} rules", " ".join(was.rules), " ".join(now.rules)))
        if was.scores != now.scores:
            changes.append(Change(patient, locale, f"{key} scores", was.scores, now.scores))
        if was.detail != now.detail:
            removed = [line for line in was.detail if line not in now.detail]
            added = [line for line in now.detail if line not in was.detail]
            if removed or added:
                changes.append(Change(patient, locale, f"{key} detail", " / ".join(removed) or "—",
                                      " / ".join(added) or "—"))
            else:  # the same lines in another order (they are in priority order)
                moved = [i for i, (a, b) in enumerate(zip(was.detail, now.detail, strict=True)) if a != b]
                changes.append(Change(patient, locale, f"{key} detail order", " / ".join(was.detail[i] for i in moved),
                                      " / ".join(now.detail[i] for i in moved)))
    return changes


def fixture_bundles(directory: Path) -> list[tuple[str, Any]]:
    return [(path.stem, orjson.loads(path.read_bytes())) for path in sorted(directory.glob("*.json"))]


def compare_fixtures(bundles: Iterable[tuple[str, Any]], baseline: Knowledge, edited: Knowledge, now: datetime,
                     locales: Sequence[str] = ("en",)) -> Comparison:
    result = Comparison()
    for name, bundle in bundles:
        changed = False
        for locale in locales:
            before, after = _faces(baseline, bundle, now, locale), _faces(edited, bundle, now, locale)
            if isinstance(after, str) or isinstance(before, str):
                result.failures += isinstance(after, str)
                if before != after:
                    text = before if isinstance(before, str) else "; ".join(_shown(f) for f in before) or "no cards"
                    after_text = after if isinstance(after, str) else "; ".join(_shown(f) for f in after) or "no cards"
                    result.changes.append(Change(name, locale, "(all cards)", text, after_text))
                    changed = True
                continue
            found = _card_changes(name, locale, before, after)
            result.changes.extend(found)
            changed = changed or bool(found)
        if not changed:
            result.unchanged.append(name)
    return result


def _cell(text: str) -> str:
    flat = text.replace("|", "\\|").replace("\n", " ")
    return flat if len(flat) <= _CELL else flat[: _CELL - 1] + "…"


def format_table(changes: Sequence[Change], *, show_locale: bool) -> str:
    """A markdown table, columns padded so it also reads in a terminal."""
    header = ["patient", *(["locale"] if show_locale else []), "card", "before", "after"]
    rows = [[_cell(c.patient), *([c.locale] if show_locale else []), _cell(c.card), _cell(c.before), _cell(c.after)]
            for c in changes]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"
             for row in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def run_check(directory: Path, fixtures: Path | None, now: datetime, locales: Sequence[str], out: TextIO) -> int:
    """The whole report: problems, then the before/after table. Exit status 1 when there are errors."""
    baseline = load_knowledge()
    edited, problems = check_knowledge(directory, baseline)
    errors = sum(p.severity == "error" for p in problems)
    out.write(f"Knowledge check of {directory}\n")
    if edited is not None:
        out.write(f"  version {baseline.version} -> {edited.version}; content {baseline.content_hash[:12]} -> "
                  f"{edited.content_hash[:12]}\n")
    out.write(f"\n{errors} error(s), {len(problems) - errors} warning(s)\n")
    for problem in problems:
        out.write(f"  {problem.line()}\n")
    if edited is None:
        out.write("\nThe edited knowledge does not load: no cards to compare.\n")
        return 1
    if fixtures is None or not fixtures.is_dir():
        out.write("\nNo fixture directory (give --fixtures DIR): no cards to compare.\n")
        return 1 if errors else 0
    bundles = fixture_bundles(fixtures)
    result = compare_fixtures(bundles, baseline, edited, now, locales)
    out.write(f"\nEffect on the cards of {len(bundles)} fixture patient(s) in {fixtures} "
              f"({', '.join(locales)}, at {now.isoformat()}):\n\n")
    if result.changes:
        out.write(format_table(result.changes, show_locale=len(locales) > 1) + "\n")
    else:
        out.write("No card changes.\n")
    out.write(f"\n{len(result.unchanged)} of {len(bundles)} patient(s) unchanged")
    out.write(f"; {result.failures} patient(s) could not be assessed with the edit.\n" if result.failures else ".\n")
    return 1 if errors or result.failures else 0
