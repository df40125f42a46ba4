"""The therapy card's words: options fitted to this patient, what they take now, what was tried, what is not offered.

Issue 10: a prescriber reads, in order, the options (each with its one most severe note), the drugs the
patient already takes ("Current: colchicine since 24 Jul 2026 — with clarithromycin: avoid; stop or pause
it"), those tried and stopped, the options not offered and why, and any fact a caution needs that is not
recorded ("Pregnancy status not recorded: check before low-dose warfarin, minocycline").
"""

from __future__ import annotations

from typing import Any, Final

from hooks.engine.cards.text import Words, md_text
from hooks.engine.knowledge import LEVEL_ORDER, Knowledge
from hooks.engine.therapy import TherapyPlan

__all__ = ["SHOWN_OPTIONS", "TherapyCard"]

SHOWN_OPTIONS: Final = 4


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


class TherapyCard:
    def __init__(self, plan: TherapyPlan, knowledge: Knowledge, words: Words) -> None:
        self.plan, self.k, self.w = plan, knowledge, words
        self.cautions = list(plan.cautions)

    def bold(self, heading: str, text: str) -> str:
        return f"**{self.w.msg('heading', heading)}{self.w.colon()}** {text}"

    def option_label(self, option_id: str) -> str:
        return self.w.msg("option_labels", option_id)

    def note_for(self, option_id: str, *, current: bool = False) -> str:
        """The one-line note of an offered or current option: its variant, else its most severe caution.

        A contraindicating caution removes an offered option, so only a drug the patient already takes shows one
        (colchicine with a freshly started clarithromycin): that is the note a prescriber must read first.
        """
        index = self.plan.variant(option_id)
        mine = sorted((c for c in self.cautions if c.option == option_id and (current or not c.contraindicates)),
                      key=lambda c: LEVEL_ORDER.index(c.level))
        if index is not None and not (mine and mine[0].contraindicates):
            variant = self.k.option(option_id).variants[index]
            if variant.short is not None:
                return variant.short.get(self.w.locale)
        if not mine:
            return ""
        first = mine[0]
        short = next(c for c in self.k.cautions if c.id == first.caution_id).short.get(self.w.locale)
        if "{drugs}" in short:
            # Name the patient's drugs ("with clarithromycin"), not the class: the prescriber acts on them.
            own = set(self.k.option(option_id).drugs)
            drugs = dict.fromkeys(_lower_first(self.w.drug(e.concept, e.route, e.form)) for e in first.evidence
                                  if e.kind == "medication" and e.concept not in own)
            short = short.replace("{drugs}", ", ".join(drugs) or self.w.msg("reasons", first.reason))
        return short

    def causes(self, option_id: str) -> str:
        """The cause found, for a "treat the underlying cause" option: "(multiple myeloma)", "(adénocarcinome)".

        A cause read from free text is named by the words of the record (escaped), a coded one by its label; a
        cause the option's label already names ("glucocorticoids for sarcoidosis") is not repeated.
        """
        label = self.option_label(option_id).lower()
        names = [name for name in dict.fromkeys(
            _lower_first(md_text(e.text, 60) if "from-text" in e.flags and e.text else self.w.label(e.concept))
            for e in self.plan.causes_of(option_id)) if name.lower() not in label]
        return f" ({', '.join(names)})" if names else ""

    def lines(self) -> list[str]:
        return [*self._option_lines(), *self._drug_lines(), *self._not_offered_lines(), *self._unknown_lines()]

    def _option_lines(self) -> list[str]:
        lines = []
        for index, option_id in enumerate(self.plan.options[:SHOWN_OPTIONS], start=1):
            note = self.note_for(option_id)
            if option_id == "observation" and not self.plan.indication and not note:
                note = self.w.msg("text", "observe_reason")
            label = _upper_first(self.option_label(option_id)) + self.causes(option_id)
            lines.append(f"{index}. {label}" + (f" — {note}" if note else ""))
        return lines

    def _drug_lines(self) -> list[str]:
        lines = []
        for use in self.plan.current:
            note = self.note_for(use.option, current=True)
            since = self.w.msg("text", "since", date=self.w.date(use.since)) if use.since else ""
            text = " ".join(p for p in (self.w.label(use.medication), since) if p)
            lines.append(self.bold("current", text + (f" — {note}" if note else "")))
        if self.plan.tried:
            stopped = [self.w.label(u.medication)
                       + (f" ({self.w.msg('text', 'stopped', date=self.w.date(u.stopped))})" if u.stopped else "")
                       for u in self.plan.tried]
            lines.append(self.bold("tried", ", ".join(stopped)))
        return lines

    def _not_offered_lines(self) -> list[str]:
        on_card = {c.id: c.on_card for c in self.k.cautions}
        taking = {u.option for u in self.plan.current}
        # One entry per option, with all its reasons: "stop calcium and vitamin D (hypoparathyroidism, low calcium)".
        reasons: dict[str, list[str]] = {}
        for c in self.cautions:
            if c.contraindicates and c.option not in taking and on_card[c.caution_id]:
                reason = self.w.msg("reasons", c.reason)
                if reason not in reasons.setdefault(c.option, []):
                    reasons[c.option].append(reason)
        not_offered = [f"{self.option_label(option)} ({', '.join(why)})" for option, why in reasons.items()]
        separator = "\u00a0; " if self.w.fr else "; "
        return [self.bold("not_offered", separator.join(not_offered))] if not_offered else []

    def _unknown_lines(self) -> list[str]:
        lines = [self.bold("not_recorded", self.w.msg("unknown", u)) for u in self.plan.unknowns]
        # A fact a caution needs is unknown ("pregnancy status not recorded") for an option past the ones
        # shown: the card still says so, with the options it concerns (issue 10: never assume the safe value).
        hidden = set(self.plan.options[SHOWN_OPTIONS:])
        unknown_for: dict[str, list[str]] = {}
        for caution in self.cautions:
            if caution.level == "not-recorded" and caution.option in hidden:
                unknown_for.setdefault(caution.reason, []).append(self.option_label(caution.option))
        for reason, labels in unknown_for.items():
            check = self.w.msg("text", "check_before", options=", ".join(labels))
            lines.append(f"**{_upper_first(self.w.msg('reasons', reason))}{self.w.colon()}** {check}")
        if len(self.plan.options) > SHOWN_OPTIONS:
            more = self.w.msg("text", "more_options", count=len(self.plan.options) - SHOWN_OPTIONS)
            lines.append(f"_{more}_")
        return lines

    def summary(self) -> str:
        plan = self.plan
        title = self.w.msg("subtype_titles", plan.subtype)
        to_review = [u for u in plan.current
                     if any(c.option == u.option and c.contraindicates for c in self.cautions)]
        if to_review:
            drug = _lower_first(self.w.label(to_review[0].medication))
            return self.w.msg("summary", "therapy_review", title=title, drug=drug)
        if plan.options and not (plan.options[0] == "observation" and not plan.indication):
            return self.w.msg("summary", "therapy", title=title, first=self.option_label(plan.options[0]))
        if not plan.indication:
            return self.w.msg("summary", "therapy_observe", title=title)
        return self.w.msg("summary", "therapy_current", title=title)

    def indicator(self) -> str:
        # A "review" option is about a drug the patient takes now (a DOAC with a mechanical valve): a warning.
        reviews = any(self.k.option(o).kind == "review" for o in self.plan.options)
        return "warning" if self.plan.touches_current_medication or reviews else "info"

    def extension(self) -> dict[str, Any]:
        plan = self.plan
        extension: dict[str, Any] = {
            "kind": "therapy-options",
            "options": list(plan.options),
            "cautions": [{"option": c.option, "reason": c.reason, "level": c.level} for c in self.cautions],
            "indication": plan.indication,
        }
        if plan.current:
            extension["current"] = [{"option": u.option, "since": u.since.date().isoformat() if u.since else None}
                                    for u in plan.current]
        if plan.tried:
            extension["tried"] = [{"option": u.option,
                                   "stopped": u.stopped.date().isoformat() if u.stopped else None}
                                  for u in plan.tried]
        return extension

