"""Evidence as one clinician-worded line each ("Calcium 2,72 mmol/L (10,9 mg/dL), 17/11/2026").

Lines carry our own labels (never the sender's display or a resource id: those stay in the audit trail and
the full assessment), findings of one resource are joined on one line, and a :class:`Ledger` makes sure no
evidence item is repeated within one response (issue 12).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from hooks.engine.cards.text import Words
from hooks.engine.evidence import Evidence

__all__ = ["Ledger", "evidence_lines"]

_SENT_UNIT: Final = re.compile(r"^[<>=≤≥]*\s*[-+]?\d+(?:[.,]\d+)?\s*(\S.*)$")
_NOT_CORRECTED: Final = frozenset({"uncorrected", "albumin-at-least-4"})
# Derived markers that are not facts of their own.
_SKIPPED: Final = frozenset({"renal_estimate"})
_FINDING_ORDER: Final = ("calcinosis", "calciphylaxis", "ulcer", "necrosis", "purpura_livedo", "nodule", "pain",
                         "infection", "joint_destruction", "local_injury", "biopsy_calciphylaxis")


@dataclass(slots=True)
class Ledger:
    """The evidence already shown in this response."""

    shown: set[tuple[object, ...]] = field(default_factory=set)

    def fresh(self, item: Evidence) -> bool:
        key = (item.kind, item.concept, item.reference, item.date, item.value)
        if key in self.shown:
            return False
        self.shown.add(key)
        return True


def _sent_unit(item: Evidence) -> str | None:
    match = _SENT_UNIT.match(item.text or "")
    return match.group(1) if match else None


def _dated(words: Words, text: str, item: Evidence) -> str:
    return f"{text}, {words.date(item.date)}" if item.date else text


def _lab_line(words: Words, item: Evidence) -> str:
    label = words.label(item.concept)
    if item.concept == "calcium_corrected" and _NOT_CORRECTED.intersection(item.flags):
        label = words.label("calcium_uncorrected")
    if item.value is None:
        return _dated(words, label, item)
    value = words.quantity(item.concept, item.value, _sent_unit(item))
    line = _dated(words, f"{label} {value}", item)
    if "not-current" in item.flags:
        line += f" ({words.msg('heading', 'not_current').lower()})"
    return line


def _ckd_line(words: Words, item: Evidence) -> str:
    stage = (item.text or "").split(" ", 1)[0]
    if stage == "dialysis":
        return words.label("dialysis")
    return f"{words.label('ckd_stage')} {stage}".strip()


def _finding_lines(words: Words, findings: list[Evidence]) -> list[str]:
    """Findings at the same sites on one line: "Ulcer, necrosis, painful — thigh, 11 Nov 2026"."""
    by_site: dict[tuple[str, ...], list[Evidence]] = {}
    for item in findings:
        key = tuple(sorted(s for s in item.flags if s.startswith("skin_")))
        by_site.setdefault(key or (item.reference or f"#{id(item)}",), []).append(item)
    lines = []
    for group in by_site.values():
        kinds = sorted({i.concept for i in group}, key=lambda k: _FINDING_ORDER.index(k) if k in _FINDING_ORDER else 99)
        sites = dict.fromkeys(s for i in group for s in i.flags if s.startswith("skin_"))
        head = ", ".join(words.label(k) for k in kinds)
        text = head[:1].upper() + head[1:]
        if sites:
            text += " — " + ", ".join(words.site(s) for s in sites)
        if any("suspected" in i.flags for i in group):
            text += f" ({words.msg('text', 'suspected')})"
        latest = max((i.date for i in group if i.date), default=None)
        lines.append(f"{text}, {words.date(latest)}" if latest else text)
    return lines


def _line(words: Words, item: Evidence) -> str | None:
    if item.kind == "lab" or (item.kind == "derived" and item.value is not None):
        return _lab_line(words, item)
    if item.kind == "derived" and item.concept == "ckd_stage":
        return _ckd_line(words, item)
    if item.kind == "condition":
        text = words.label(item.concept)
        if "from-text" in item.flags:
            text += f" ({words.msg('text', 'in_notes')})"
        elif item.date:
            text += f" ({words.msg('text', 'since', date=words.date(item.date))})"
        if {"provisional", "differential"}.intersection(item.flags):
            text += f" ({words.msg('text', 'suspected')})"
        return text
    if item.kind == "medication":
        stopped = bool({"stopped", "completed"}.intersection(item.flags))
        key = "stopped" if stopped else "since"
        text = words.drug(item.concept, item.route, item.form)
        return f"{text} ({words.msg('text', key, date=words.date(item.date))})" if item.date else text
    if item.kind == "demographic":
        if "neonate" in item.flags or (item.text or "").endswith("days"):
            return words.msg("text", "age_days", days=(item.text or "").split(" ", 1)[0])
        return words.msg("text", "age_years", age=(item.text or "").split(" ", 1)[0]).capitalize()
    if item.kind == "status":
        if "unknown" in item.flags:
            return words.msg("unknown", "pregnancy") if item.concept == "pregnancy" else None
        return _dated(words, words.label(item.concept), item)
    if item.kind == "unknown":
        return words.msg("unknown", item.concept) if words.has("unknown", item.concept) else None
    return None


def _repeats_a_derived_value(item: Evidence, derived: list[Evidence]) -> bool:
    """The total calcium a derived calcium line was computed from (same draw): shown once, as the derived."""
    return item.kind == "lab" and item.concept == "calcium_total" and any(d.date == item.date for d in derived)


def evidence_lines(words: Words, items: Iterable[Evidence], ledger: Ledger, limit: int) -> list[str]:
    """At most ``limit`` lines for the evidence not yet shown in this response."""
    wanted = [i for i in items if i.concept not in _SKIPPED]
    derived_calcium = [i for i in wanted if i.kind == "derived" and i.concept == "calcium_corrected"]
    fresh = [i for i in wanted if not _repeats_a_derived_value(i, derived_calcium) and ledger.fresh(i)]
    findings = [i for i in fresh if i.kind == "finding"]
    shown: list[tuple[Evidence | None, str]] = [(None, line) for line in _finding_lines(words, findings)] \
        if findings else []
    # A coded condition that is also read as a skin finding (Calciphylaxis, with its site) is one fact: the
    # finding line, which comes first and names the site, says it.
    as_findings = {(i.reference, i.concept) for i in findings if i.reference}
    for item in fresh:
        if item.kind == "finding" or (item.kind == "condition" and (item.reference, item.concept) in as_findings):
            continue
        line = _line(words, item)
        if line and all(line != other for _, other in shown):
            shown.append((item, line))
    # A status decided by a condition shown on the card (Z95.2 "prosthetic valve, type not coded", and the
    # "mechanical valve" it is counted as) is one fact: the condition line says it, if it is within the limit.
    conditions = {i.reference for i, _ in shown[:limit] if i is not None and i.kind == "condition" and i.reference}
    kept = [(i, line) for i, line in shown
            if not (i is not None and i.kind == "status" and i.reference in conditions)]
    return [line for _, line in kept[:limit]]
