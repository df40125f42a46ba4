"""Assertion-aware reading of English and French clinical text with edsnlp (AP-HP's clinical NLP pipeline).

One spaCy/edsnlp pipeline, built once: sentence splitting, accent- and case-normalisation, a regex matcher
for the term kinds of ``tables/text_terms.csv``, and edsnlp's rule-based qualifiers ``eds.negation``,
``eds.hypothesis``, ``eds.family`` and ``eds.history``. The qualifiers keep edsnlp's French cue lists and
receive the English ConText cues (and the French additions or removals) of ``tables/assertion_cues.csv``.
No model is downloaded: everything is rules.

Two costs are kept off the hot path: a text without any candidate term (most problem-list entries) never
reaches the pipeline (one compiled regex over the folded text decides), and results are cached by text,
since problem-list and note texts repeat across calls.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
import unicodedata
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal

__all__ = ["Assertion", "Mention", "TermKinds", "names_skin_words", "read_mentions", "term_kinds", "warm_up"]

Assertion = Literal["positive", "negated", "hypothetical", "family", "historical"]

log = logging.getLogger("fhir_mappings.text")

# Negation words that undo a history cue right after them: "ulcère non cicatrisé", "not healed".
_UNDOING: Final = frozenset({"non", "pas", "not", "never", "jamais"})
_LOCK: Final = threading.Lock()
_CACHE_SIZE: Final = 8192
# Term kinds that only qualify another term (where it is, what caused it).
_SCOPE_KINDS: Final = frozenset(
    {"skin_word", "non_skin_site", "other_ulcer_cause", "non_cutaneous_calcification", "lesion_word"}
)
# Texts longer than this are read in full but not cached (a long note rarely repeats verbatim).
_CACHE_MAX_CHARS: Final = 2000


@dataclass(frozen=True, slots=True)
class Mention:
    """One term found in a text, with what the text asserts about it."""

    kind: str
    # The matched words and their sentence, as written (for evidence lines).
    text: str
    sentence: str
    sentence_index: int
    # Token offsets in the whole text, for "within a few words" checks.
    start: int
    end: int
    assertion: Assertion
    # The words that made the assertion other than positive ("absente", "mother", "to rule out").
    cue: str | None = None


@dataclass(frozen=True, slots=True)
class TermKinds:
    patterns: dict[str, tuple[str, ...]]
    prefilter: re.Pattern[str]
    skin_words: re.Pattern[str]


def _table(name: str) -> list[dict[str, str]]:
    raw = resources.files("fhir_mappings").joinpath("tables", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(raw)))


@lru_cache(maxsize=1)
def term_kinds() -> TermKinds:
    """The term patterns per kind (folded-text regexes) and one prefilter regex matching any of them."""
    patterns: dict[str, list[str]] = defaultdict(list)
    for row in _table("text_terms.csv"):
        patterns[row["kind"]].append(row["pattern"])
    # Only the terms worth reading a text for; scope words ("artérielle", "skin") alone never are.
    anchors = "|".join(f"(?:{p})" for kind, values in patterns.items() if kind not in _SCOPE_KINDS for p in values)
    skin = "|".join(f"(?:{p})" for p in patterns["skin_word"])
    return TermKinds({kind: tuple(values) for kind, values in patterns.items()}, re.compile(anchors), re.compile(skin))


def _cues() -> dict[tuple[str, str], tuple[list[str], list[str]]]:
    """(qualifier, role) -> (cues to add, cues to remove)."""
    found: dict[tuple[str, str], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in _table("assertion_cues.csv"):
        added, removed = found[(row["qualifier"], row["role"])]
        (added if row["action"] == "add" else removed).append(row["cue"])
    return found


def _merged(default: Iterable[str], added: list[str], removed: list[str]) -> list[str]:
    drop = set(removed)
    return list(dict.fromkeys([*(c for c in default if c not in drop), *added]))


@lru_cache(maxsize=1)
def _pipeline() -> Any:
    # Imported here: spaCy and edsnlp take about a second to import, and only text-bearing data needs them.
    import edsnlp
    import edsnlp.pipes as eds
    from edsnlp.pipes.qualifiers.family import patterns as family_fr
    from edsnlp.pipes.qualifiers.history import patterns as history_fr
    from edsnlp.pipes.qualifiers.hypothesis import patterns as hypothesis_fr
    from edsnlp.pipes.qualifiers.negation import patterns as negation_fr
    from edsnlp.pipes.terminations import termination as termination_fr

    cues = _cues()

    def cue_list(qualifier: str, role: str, default: Iterable[str]) -> list[str]:
        added, removed = cues.get((qualifier, role), ([], []))
        return _merged(default, added, removed)

    nlp = edsnlp.blank("eds")
    nlp.add_pipe(eds.sentences())
    nlp.add_pipe(eds.normalizer())
    nlp.add_pipe(eds.matcher(regex={k: list(v) for k, v in term_kinds().patterns.items()}, attr="NORM"))
    nlp.add_pipe(
        eds.negation(
            pseudo=cue_list("negation", "pseudo", negation_fr.pseudo),
            preceding=cue_list("negation", "preceding", negation_fr.preceding),
            following=cue_list("negation", "following", negation_fr.following),
            termination=cue_list("negation", "termination", termination_fr),
            explain=True,
        )
    )
    nlp.add_pipe(
        eds.hypothesis(
            preceding=cue_list("hypothesis", "preceding", hypothesis_fr.preceding),
            following=cue_list("hypothesis", "following", hypothesis_fr.following),
            termination=cue_list("hypothesis", "termination", termination_fr),
            explain=True,
        )
    )
    nlp.add_pipe(
        eds.family(
            family=cue_list("family", "family", family_fr.family),
            termination=cue_list("family", "termination", termination_fr),
            use_sections=False,
            explain=True,
        )
    )
    nlp.add_pipe(
        eds.history(
            history=cue_list("history", "history", history_fr.history),
            termination=cue_list("history", "termination", termination_fr),
            explain=True,
        )
    )
    return nlp


def warm_up() -> None:
    """Build the pipeline now (service start-up), not in the first request that carries text."""
    _pipeline()("calcinose")


def _cue_text(cues: Any) -> str | None:
    return ", ".join(str(c.text) for c in cues) if cues else None


def _history_holds(entity: Any) -> bool:
    """A history cue counts unless a negation word stands right before it ("not healed")."""
    cues = entity._.history_cues or ()
    return any(cue.start == 0 or cue.doc[cue.start - 1].norm_ not in _UNDOING for cue in cues)


def _assertion(entity: Any) -> tuple[Assertion, str | None]:
    if entity._.family:
        return "family", _cue_text(entity._.family_cues)
    if entity._.negation:
        return "negated", _cue_text(entity._.negation_cues)
    if entity._.history and _history_holds(entity):
        return "historical", _cue_text(entity._.history_cues)
    if entity._.hypothesis:
        return "hypothetical", _cue_text(entity._.hypothesis_cues)
    return "positive", None


def _read(text: str) -> tuple[Mention, ...]:
    # spaCy does not promise that one pipeline may run in several threads at once (assessments run on a
    # worker pool): one text at a time, which costs nothing next to the cache.
    with _LOCK:
        doc = _pipeline()(text)
    # Each sentence and its text once, each entity's sentence by bisection: ``Span.sent`` and ``Span.text``
    # walk the sentence's tokens on every call, quadratic in a long note without full stops (8 KiB of
    # comma-separated findings took half a second, 32 KiB five, past the assessment budget).
    sentences = list(doc.sents)
    starts = [sentence.start for sentence in sentences]
    texts: dict[int, str] = {}
    mentions: list[Mention] = []
    for entity in doc.ents:
        index = max(bisect_right(starts, entity.start) - 1, 0)
        if index not in texts:
            texts[index] = sentences[index].text.strip()
        assertion, cue = _assertion(entity)
        mentions.append(
            Mention(
                kind=entity.label_,
                text=entity.text,
                sentence=texts[index],
                sentence_index=index,
                start=entity.start,
                end=entity.end,
                assertion=assertion,
                cue=cue,
            )
        )
    return tuple(mentions)


@lru_cache(maxsize=_CACHE_SIZE)
def _read_cached(text: str) -> tuple[Mention, ...]:
    return _read(text)


def _prefilter_form(text: str) -> str:
    """Lower case without accents, punctuation kept: the form the matcher's NORM attribute also has."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.replace("œ", "oe").replace("Œ", "oe"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def names_skin_words(text: str) -> bool:
    """A skin or subcutaneous-tissue word ("skin", "sous-cutané", "parties molles") appears in the text."""
    return term_kinds().skin_words.search(_prefilter_form(text)) is not None


def read_mentions(text: str | None) -> tuple[Mention, ...]:
    """Every term of ``tables/text_terms.csv`` in ``text``, with its assertion. Pure: same text, same answer."""
    if not text or not text.strip():
        return ()
    if term_kinds().prefilter.search(_prefilter_form(text)) is None:
        return ()
    if len(text) > _CACHE_MAX_CHARS:
        return _read(text)
    return _read_cached(text)


def cache_info() -> Any:
    """Hits and misses of the per-text cache (for the benchmark)."""
    return _read_cached.cache_info()


def clear_cache() -> None:
    _read_cached.cache_clear()
