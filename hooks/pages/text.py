"""The words of the web pages: the cards' ``Words`` (clinical labels, numbers, units, dates) plus the pages' own.

French pages follow the cards' conventions: decimal comma, SI units first, a no-break space before ":".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from hooks.engine.cards.text import Words
from hooks.engine.knowledge import Knowledge, load_knowledge

__all__ = ["LOCALES", "PageWords", "page_strings", "page_words", "pick_locale"]

LOCALES = ("en", "fr")


@lru_cache(maxsize=1)
def page_strings() -> dict[str, dict[str, dict[str, str]]]:
    raw = resources.files("hooks.pages").joinpath("strings.yaml").read_text(encoding="utf-8")
    strings: dict[str, dict[str, dict[str, str]]] = yaml.safe_load(raw)
    return strings


def pick_locale(query: str | None, accept_language: str | None, default: str) -> str:
    """``?lang=`` first (the card's language travels in its link), then Accept-Language, then the default."""
    from hooks.web import preferred_locale

    if query in LOCALES:
        return str(query)
    return preferred_locale(accept_language, default)


@dataclass(frozen=True, slots=True)
class PageWords:
    words: Words

    @property
    def locale(self) -> str:
        return self.words.locale

    @property
    def knowledge(self) -> Knowledge:
        return self.words.knowledge

    def t(self, section: str, key: str, **values: Any) -> str:
        """A page string; an unknown key shows as itself (a label missing from a newer record, never a 500)."""
        entry = page_strings().get(section, {}).get(key)
        if entry is None:
            return key
        text = entry.get(self.locale) or entry["en"]
        return text.format(**values) if values else text

    def msg(self, section: str, key: str, **values: Any) -> str:
        """A knowledge message (messages.yaml), or the key itself when this knowledge version lacks it."""
        if not self.words.has(section, key):
            return key
        return self.words.msg(section, key, **values)

    def heading(self, key: str) -> str:
        return self.t("heading", key)

    def col(self, key: str) -> str:
        return self.t("column", key)

    def label(self, concept: str) -> str:
        return self.words.label(concept)

    def date(self, moment: datetime | str | None) -> str:
        return self.words.date(_moment(moment))

    def date_time(self, moment: datetime | str | None) -> str:
        value = _moment(moment)
        if value is None:
            return ""
        utc = value.astimezone(UTC) if value.tzinfo else value
        return f"{self.words.date(utc)} {utc:%H:%M} UTC"

    def quantity(self, analyte: str, value: float | None, sent: str | None = None) -> str:
        return "" if value is None else self.words.quantity(analyte, value, sent)

    def number(self, value: float, decimals: int = 0) -> str:
        return self.words.number(value, decimals)

    def signed(self, points: int) -> str:
        return f"+{points}" if points > 0 else ("−" + str(-points) if points < 0 else "0")

    def points(self, points: Any) -> str:
        """A rule's points per subtype, largest first: "metastatic +3, calciphylaxis +1, dystrophic −2"."""
        shown = [(s, p) for s, p in (points.items() if isinstance(points, dict) else ()) if isinstance(p, int) and p]
        ordered = sorted(shown, key=lambda item: -item[1])
        return ", ".join(f"{self.msg('subtype_names', s)} {self.signed(p)}" for s, p in ordered)

    def colon(self) -> str:
        return self.words.colon()


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def page_words(locale: str, knowledge: Knowledge | None = None) -> PageWords:
    return PageWords(Words(knowledge or load_knowledge(), locale if locale in LOCALES else "en"))
