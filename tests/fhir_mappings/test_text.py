"""Free-text skin findings in English and French: assertions (rule C5) and scope to the skin (issue 11).

The corpus ``tests/fixtures/text/assertions.csv`` holds negated, hypothetical, family, historical, out-of-scope
and positive phrasings with the reading a clinician expects; each row is one test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fhir_mappings.text import find_text_findings, read_mentions, read_skin_text, text_names_skin
from fhir_mappings.text.pipeline import cache_info

CORPUS = Path(__file__).parents[1] / "fixtures" / "text" / "assertions.csv"
ROWS = list(csv.DictReader(CORPUS.read_text(encoding="utf-8").splitlines()))


def _expected(cell: str) -> set[tuple[str, str]]:
    pairs = set()
    for item in filter(None, cell.split(";")):
        kind, _, value = item.partition(":")
        pairs.add((kind, value or "asserted"))
    return pairs


def test_the_corpus_covers_every_assertion_in_both_languages() -> None:
    assert len(ROWS) >= 40
    readings = {value for row in ROWS for _, value in _expected(row["set_aside"]) | _expected(row["findings"])}
    assert {"negated", "historical", "family", "suspected", "asserted"} <= readings
    assert any("(fr" in row["what it checks"] for row in ROWS)
    assert any("(en" in row["what it checks"] for row in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[f"{i:02d}-{row['text'][:40]}" for i, row in enumerate(ROWS)])
def test_corpus_reading(row: dict[str, str]) -> None:
    findings, set_aside = read_skin_text(row["text"], skin_context=row["skin_context"] == "yes")
    assert {(f.kind, f.certainty) for f in findings} == _expected(row["findings"]), row["what it checks"]
    assert {(s.kind, s.reason) for s in set_aside} == _expected(row["set_aside"]), row["what it checks"]


def test_findings_carry_body_sites_and_the_sentence() -> None:
    (finding,) = find_text_findings("Calcinose des fesses. Pas d'ulcère.")
    assert finding.kind == "calcinosis"
    assert finding.body_sites == ("skin_buttock",)
    assert finding.clause == "Calcinose des fesses."


def test_a_set_aside_mention_names_the_words_that_set_it_aside() -> None:
    _, (negated,) = read_skin_text("calcinose : absente")
    assert negated.cue == "absente"
    _, (organ,) = read_skin_text("Peptic ulcer disease")
    assert organ.cue == "Peptic"


def test_text_without_any_term_never_reaches_the_pipeline() -> None:
    before = cache_info()
    assert read_mentions("Hypertension artérielle essentielle") == ()
    assert read_mentions("Type 2 diabetes mellitus without complication") == ()
    after = cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_repeated_texts_are_read_once() -> None:
    text = "Nodules sous-cutanés douloureux des fesses, calcinose probable (cache test)"
    first = read_mentions(text)
    misses = cache_info().misses
    assert read_mentions(text) == first
    assert cache_info().misses == misses


def test_text_names_skin() -> None:
    assert text_names_skin("ulcère de la cuisse")
    assert text_names_skin("subcutaneous mass")
    assert not text_names_skin("Peptic ulcer disease")
    assert not text_names_skin(None)


def test_empty_text() -> None:
    assert find_text_findings(None) == ()
    assert find_text_findings("   ") == ()


def test_each_mention_carries_its_own_sentence_and_index() -> None:
    text = ("Patiente vue ce jour. Calcinose cutanée des doigts. Pas d'ulcération au coude. "
            "Nodules, livedo, " + "fatigue, " * 200 + "nécrose des orteils")
    mentions = read_mentions(text)
    by_text = {m.text.lower(): m for m in mentions}
    calcinosis = by_text["calcinose"]
    assert calcinosis.sentence == "Calcinose cutanée des doigts."
    assert calcinosis.sentence_index == 1
    ulcer = next(m for m in mentions if m.text.lower().startswith("ulc"))
    assert ulcer.sentence == "Pas d'ulcération au coude."
    assert ulcer.assertion == "negated"
    necrosis = next(m for m in mentions if m.text.lower().startswith("nécrose"))
    # The last, long comma-separated sentence: read whole, with its own index.
    assert necrosis.sentence.startswith("Nodules, livedo, fatigue,")
    assert necrosis.sentence.endswith("nécrose des orteils")
    assert necrosis.sentence_index == 3
