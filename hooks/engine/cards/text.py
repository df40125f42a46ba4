"""Words, numbers and units for cards, in English or French, and markdown that request data cannot break.

Numbers are rounded to clinical precision and written with a decimal comma in French; SI units come first when
the lab reported SI or the card is French, with both systems for calcium, phosphate and Ca x P (issue 12).
Every string that comes from the request (code text, displays) goes through :func:`md_text`, which escapes all
ASCII punctuation for CommonMark/GFM (links, images, raw HTML, code spans, tables and autolinks cannot form),
flattens line breaks and bounds the length (issue 16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from fhir_mappings.terminology import bodysite_name, concept_display
from hooks.engine.knowledge import Knowledge

__all__ = ["Words", "md_text"]

_PUNCTUATION: Final = re.compile(r"([!-/:-@\[-`{-~])")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MAX_ECHO: Final = 90
# Canonical analyte -> the display family of messages.yaml "units".
_FAMILY: Final = {
    "calcium_total": "calcium",
    "calcium_corrected": "calcium",
    "calcium_ionized": "calcium",
    "phosphate": "phosphate",
    "ca_x_p": "ca_x_p",
    "creatinine": "creatinine",
    "albumin": "albumin",
    "pth_intact": "pth_intact",
    "vitd_25oh": "vitd_25oh",
    "vitd_1_25": "vitd_1_25",
    "magnesium": "magnesium",
    "egfr": "egfr",
    "egfr_ckd_epi_2021": "egfr",
    "crcl_cg": "crcl",
    "crcl_cockcroft_gault": "crcl",
    "bicarbonate": "bicarbonate",
    "urea_nitrogen": "urea_nitrogen",
    "urea": "urea",
    "alp": "alp",
    "body_weight": "weight",
    "dry_weight": "weight",
    "body_weight_stated": "weight",
}
# Units a lab writes when it reports in SI (the sent unit decides which system comes first).
_SI_UNITS: Final = ("mmol/l", "umol/l", "µmol/l", "g/l", "nmol/l", "pmol/l", "ng/l")
_MONTHS_EN: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def md_text(value: str | None, limit: int = _MAX_ECHO) -> str:
    """Request text made inert in markdown: one line, bounded, every ASCII punctuation mark escaped."""
    if not value:
        return ""
    flat = _CONTROL.sub(" ", value).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return _PUNCTUATION.sub(r"\\\1", flat)


@dataclass(frozen=True, slots=True)
class Words:
    """Everything locale-dependent a card needs."""

    knowledge: Knowledge
    locale: str

    @property
    def fr(self) -> bool:
        return self.locale == "fr"

    def msg(self, section: str, key: str, **values: Any) -> str:
        return self.knowledge.message(section, key, self.locale).format(**values)

    def has(self, section: str, key: str) -> bool:
        return key in self.knowledge.messages.get(section, {})

    def colon(self) -> str:
        return "\u00a0:" if self.fr else ":"

    def number(self, value: float, decimals: int) -> str:
        text = f"{value:.{decimals}f}"
        if text in {"-0", "-0.0", "-0.00"}:
            text = text[1:]
        return text.replace(".", ",") if self.fr else text

    def date(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        day = moment.date()
        if self.fr:
            return f"{day.day:02d}/{day.month:02d}/{day.year}"
        return f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"

    def label(self, concept: str) -> str:
        """Our own label for a concept (never the sender's display): French cards stay French."""
        if self.has("finding_kinds", concept):
            return self.msg("finding_kinds", concept)
        try:
            return concept_display(concept, "fr" if self.fr else "en")
        except LookupError:
            return concept.replace("_", " ")

    def drug(self, concept: str, route: str | None, form: str | None) -> str:
        """A drug's label, with its route when the card must show it: "Timolol ophthalmic", "Timolol collyre"
        (addendum S25: ophthalmic timolol is a beta-blocker too, and the prescriber must see which it is).
        ``route``: the order's route words; ``form``: the drug's own text, read when the route says nothing."""
        label = self.label(concept)
        shown = self.knowledge.route_shown(route, form, self.locale)
        return f"{label} {shown}" if shown else label

    def site(self, concept: str) -> str:
        """A body site as a clinician names it ("knee", "genou")."""
        return bodysite_name(concept, "fr" if self.fr else "en") or self.label(concept)

    def _unit_text(self, unit: str) -> str:
        return unit.replace("1.73", "1,73") if self.fr else unit

    def display_unit(self, analyte: str) -> tuple[str, float, int] | None:
        """The unit this locale shows first for an analyte (SI in French when there is one), with the factor
        from the canonical unit and the decimals kept: the axis of the assessment page's charts."""
        family = _FAMILY.get(analyte)
        spec = self.knowledge.messages["units"].get(family) if family else None
        if spec is None:
            return None
        unit, factor, decimals = spec["si"] if self.fr and "si" in spec else spec["conventional"]
        return self._unit_text(str(unit)), float(factor), int(decimals)

    def quantity(self, analyte: str, value: float, sent_unit: str | None = None) -> str:
        """"2,70 mmol/L (10,8 mg/dL)" in French or for an SI lab; "10.8 mg/dL (2.70 mmol/L)" otherwise."""
        family = _FAMILY.get(analyte)
        spec = self.knowledge.messages["units"].get(family) if family else None
        if spec is None:
            return self.number(value, 1)
        unit, factor, decimals = spec["conventional"]
        conventional = f"{self.number(value * factor, int(decimals))} {self._unit_text(unit)}"
        if "si" not in spec:
            return conventional
        si_unit, si_factor, si_decimals = spec["si"]
        si = f"{self.number(value * si_factor, int(si_decimals))} {self._unit_text(si_unit)}"
        sent_si = bool(sent_unit) and (sent_unit or "").strip().lower().replace("µ", "u") in _SI_UNITS
        first, second = (si, conventional) if (self.fr or sent_si) else (conventional, si)
        return f"{first} ({second})" if spec.get("both") else first
