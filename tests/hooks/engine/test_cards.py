"""Cards as the clinician and the EHR see them: contract, budgets, clinician words, languages, safe markdown.

The budgets of issue 12 are checked over every fixture patient in both languages: summary under 140
characters, detail within 600 characters and 8 lines, at most 4 cards (one critical) unless independent red
flags fire, no evidence line repeated within a response, and no internal vocabulary in what a clinician reads.
"""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from markdown_it import MarkdownIt

from fhir_mappings.terminology import concept_display, concept_ids, is_emittable
from hooks.engine.cards import EXTENSION_KEY, MAX_DETAIL_CHARS, MAX_DETAIL_LINES, render_cards
from hooks.engine.knowledge import load_knowledge
from hooks.engine.service import assess_resources
from hooks.models import SUMMARY_MAX_CHARS, Card
from tests.fhir_builders import NOW, condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.conftest import CALCINOSIS_FIXTURES, fixture_resources, run

FIXTURES = sorted(p.name for p in CALCINOSIS_FIXTURES.glob("*.json"))
SUBTYPES = {"dystrophic", "metastatic", "idiopathic", "iatrogenic", "calciphylaxis", "indeterminate"}
WORKUP_VOCABULARY = {
    "calcium", "phosphate", "albumin", "renal-function", "pth", "vitamin-d-25", "vitamin-d-1-25",
    "alkaline-phosphatase", "magnesium", "bicarbonate", "lupus-serology", "ssc-serology", "myositis-workup", "ace",
    "imaging", "biopsy",
}
# What a clinician must never read: our document sections, rule/option/caution ids, resource ids, raw labels.
_INTERNAL = [
    r"brief §", r"\bseed 00\d", r"\brule C\d", r"\bR\d{1,2}\b", r"\bS\d{1,2}[ab]?\b", r"\bP[12]\b",
    r"Observation/", r"Condition/", r"MedicationRequest/", r"Patient/", r"`", r"\[[a-z_-]+\]",
    r"ca x p", r"mg2/dL2", r"\{1\.73_m2\}", r"egfr ckd", r"computed-egfr", r"albumin-at-least-4",
    r"\b[a-z]+(?:-[a-z]+){2,}\b",  # hyphenated ids such as stop-calcium-vitamin-d
]
_ENGLISH_IN_FRENCH = [r"\bthe\b", r"\band\b", r"\bwith\b", r"\byears?\b", r"\bconfirmed\b",
                      r"\bnot\b", r"\bsince\b", r"\bstopped\b", r"\bevidence\b", r"\bcalcium x\b"]


def cards_for(fixture: str, locale: str = "en", seed: str = "hook-1") -> list[Card]:
    pid, resources = fixture_resources(fixture)
    facts, assessment = assess_resources(resources, patient_id=pid, now=NOW)
    return render_cards(assessment, facts, locale=locale, seed=seed)


def ext(card: Card) -> dict[str, Any]:
    assert card.extension is not None
    value: dict[str, Any] = card.extension[EXTENSION_KEY]
    return value


def readable(card: Card) -> str:
    return f"{card.summary}\n{card.detail or ''}\n" + "\n".join(s.label for s in card.suggestions or ())


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_every_card_honours_the_public_contract(fixture: str, locale: str) -> None:
    cards = cards_for(fixture, locale)
    uuids = [c.uuid for c in cards]
    assert len(set(uuids)) == len(uuids)
    assert all(uuids)
    for card in cards:
        assert (card.source.label and card.source.url is None) or str(card.source.url).startswith(("https://", "http://"))
        contract = ext(card)
        kind = contract["kind"]
        assert card.detail
        if kind == "subtype-assessment":
            assert contract["subtype"] in SUBTYPES
            scores = [d["score"] for d in contract["differential"]]
            assert scores == sorted(scores, reverse=True)
            assert len(scores) == 5
            assert all(re.fullmatch(r"R\d+", r) for r in contract["rules"])
            assert contract["rulesetVersion"] == load_knowledge().version
        elif kind == "red-flag":
            assert card.indicator in {"critical", "warning"}
            assert contract["flag"] in {f.id for f in load_knowledge().flags}
        elif kind == "missing-workup":
            assert set(contract["missing"]) <= WORKUP_VOCABULARY
            assert card.selectionBehavior == "any"
            assert card.suggestions is not None
            assert len(card.suggestions) == len(contract["missing"])
        elif kind == "therapy-options":
            known = {o.id for o in load_knowledge().options}
            assert set(contract["options"]) <= known
            assert all(c["option"] in known and c["reason"] and c["level"] for c in contract["cautions"])
        elif kind == "risk":
            assert contract["risk"] in {r.id for r in load_knowledge().risks}
        else:
            pytest.fail(f"unknown card kind {kind}")
        if card.indicator in {"warning", "critical"}:
            assert card.overrideReasons
            assert all(r.display for r in card.overrideReasons)
        else:
            assert card.overrideReasons is None
        if card.indicator == "critical":
            assert kind == "red-flag"  # rule C4


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_budgets_hold_for_every_fixture(fixture: str, locale: str) -> None:
    cards = cards_for(fixture, locale)
    groups = {f.id: f.group for f in load_knowledge().flags}
    critical = [c for c in cards if c.indicator == "critical"]
    assert len({groups[ext(c)["flag"]] for c in critical}) == len(critical), "one critical card per group"
    assert len(cards) <= 4 + max(0, len(critical) - 1)
    seen: set[str] = set()
    for card in cards:
        assert len(card.summary) < SUMMARY_MAX_CHARS
        detail = card.detail or ""
        assert len(detail) <= MAX_DETAIL_CHARS, (card.summary, len(detail))
        assert len([line for line in detail.splitlines() if line]) <= MAX_DETAIL_LINES, card.summary
        for line in detail.splitlines():
            fact = line.removeprefix("- ")
            if line.startswith("- ") and re.search(r"\d", fact):
                assert fact not in seen, f"repeated evidence: {fact}"
                seen.add(fact)


def _heads(card: Card) -> list[str]:
    """What each fact line of a card names first: "Calciphylaxis" in "- Calciphylaxis — thigh, 11 Nov 2026"."""
    return [re.split(r",| —| \(", line.removeprefix("- "), maxsplit=1)[0]
            for line in (card.detail or "").splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_no_card_names_one_fact_twice(fixture: str, locale: str) -> None:
    # A coded calciphylaxis read as a skin finding too was "- Calciphylaxis — thigh, …" and then
    # "- Calciphylaxis (since …)": one fact, one line (the finding's, with its site).
    for card in cards_for(fixture, locale):
        heads = _heads(card)
        assert len(heads) == len(set(heads)), (card.summary, heads)
        # An alert folded into the card ("Also: Ca × P 57 mg²/dL², above the CKD target") quotes its value:
        # no fact line repeats it.
        lines = (card.detail or "").splitlines()
        if any(line.startswith(("**Also", "**Aussi")) and "mg²/dL²" in line for line in lines):
            assert not [h for h in heads if h.startswith("Ca × P")], (card.summary, heads)


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_cards_speak_the_clinicians_words_not_ours(fixture: str, locale: str) -> None:
    for card in cards_for(fixture, locale):
        text = readable(card)
        for pattern in _INTERNAL:
            assert not re.search(pattern, text), (pattern, text)
        assert "brief" not in card.source.label.lower()
        assert "seed" not in card.source.label.lower()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_french_cards_are_entirely_french(fixture: str) -> None:
    for card in cards_for(fixture, "fr"):
        text = readable(card)
        for pattern in _ENGLISH_IN_FRENCH:
            assert not re.search(pattern, text), (pattern, text)
        assert not re.search(r"\d\.\d", text), text  # decimal comma
        assert not re.search(r"[^\s\u00a0]:(?!//)", text.replace("**", "")), text  # no-break space before ":"


def test_french_shows_si_first_and_ca_x_p_in_both_systems() -> None:
    card = next(c for c in cards_for("metastatic_ckd4_hyperparathyroidism.json", "fr")
                if ext(c)["kind"] == "subtype-assessment")
    detail = card.detail or ""
    assert "2,72 mmol/L (10,9 mg/dL)" in detail
    assert "5,27 mmol²/L² (65 mg²/dL²)" in detail
    english = next(c for c in cards_for("metastatic_ckd4_hyperparathyroidism.json", "en")
                   if ext(c)["kind"] == "subtype-assessment")
    assert "10.9 mg/dL (2.72 mmol/L)" in (english.detail or "")


def test_silent_fixture_renders_no_cards() -> None:
    assert cards_for("silent_ckd3_normal_labs.json") == []


def test_missing_workup_suggestions_are_valid_r4_draft_service_requests() -> None:
    _, resources = fixture_resources("seed000_heroin_injection_dystrophic.json")
    resources = [r for r in resources if r["resourceType"] != "Observation"]
    facts, assessment = assess_resources(resources, patient_id="seed000-heroin", now=NOW)
    card = next(c for c in render_cards(assessment, facts, locale="en", seed="s")
                if ext(c)["kind"] == "missing-workup")
    assert card.suggestions
    for suggestion in card.suggestions:
        assert suggestion.uuid
        (action,) = suggestion.actions or ()
        assert action.type == "create"
        assert action.resource is not None
        request = ServiceRequest.model_validate(action.resource)
        assert (request.status, request.intent) == ("draft", "proposal")
        assert request.subject.reference == "Patient/seed000-heroin"
        coding = request.code.coding[0]
        assert coding.system == "http://loinc.org"
        assert is_emittable("http://loinc.org", coding.code)


def test_french_cards_order_si_unit_codes() -> None:
    _, resources = fixture_resources("seed000_heroin_injection_dystrophic.json")
    resources = [r for r in resources if r["resourceType"] != "Observation"]
    facts, assessment = assess_resources(resources, patient_id="seed000-heroin", now=NOW)
    cards = render_cards(assessment, facts, locale="fr", seed="s")
    workup = next(c for c in cards if ext(c)["kind"] == "missing-workup")
    codes = {s.actions[0].resource["code"]["coding"][0]["code"] for s in workup.suggestions or ()  # type: ignore[index]
             if s.actions and s.actions[0].resource}
    assert "2000-8" in codes
    assert "17861-6" not in codes


def test_languages_differ_but_carry_the_same_contract() -> None:
    english = cards_for("metastatic_ckd4_hyperparathyroidism.json", "en")
    french = cards_for("metastatic_ckd4_hyperparathyroidism.json", "fr")
    assert [ext(c) for c in english] == [ext(c) for c in french]
    assert [c.indicator for c in english] == [c.indicator for c in french]
    assert all(e.summary != f.summary for e, f in zip(english, french, strict=True))


def test_uuids_are_stable_per_hook_instance_and_differ_between_calls() -> None:
    first = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-A")
    again = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-A")
    other = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-B")
    assert [c.uuid for c in first] == [c.uuid for c in again]
    assert not {c.uuid for c in first} & {c.uuid for c in other}


def test_the_calciphylaxis_patient_gets_one_critical_card_that_names_both_flags() -> None:
    cards = cards_for("calciphylaxis_dialysis_warfarin.json")
    assert len(cards) <= 4
    lead = cards[0]
    assert (ext(lead)["kind"], lead.indicator) == ("red-flag", "critical")
    assert ext(lead)["flag"] == "suspected-calciphylaxis"
    assert ext(lead)["also"] == ["untreated-calciphylaxis"]
    assert sum(c.indicator == "critical" for c in cards) == 1
    assert "thigh" in (lead.detail or "")


def test_warning_flags_fold_into_the_subtype_card() -> None:
    cards = cards_for("metastatic_ckd4_hyperparathyroidism.json")
    assert [ext(c)["kind"] for c in cards] == ["subtype-assessment", "missing-workup", "therapy-options"]
    subtype = cards[0]
    assert ext(subtype)["flags"] == ["elevated-calcium-phosphate-product"]
    assert "Ca × P 65 mg²/dL²" in (subtype.detail or "")


@pytest.mark.parametrize("locale", ["en", "fr"])
def test_every_summary_template_fits_under_140_characters(locale: str) -> None:
    knowledge = load_knowledge()
    longest = max((knowledge.message("subtype_names", s, locale) for s in SUBTYPES), key=len)
    longest_option = max((knowledge.message("option_labels", o.id, locale) for o in knowledge.options), key=len)
    longest_title = max((knowledge.message("subtype_titles", s, locale) for s in SUBTYPES - {"indeterminate"}),
                        key=len)
    values = {"subtype": longest, "first": longest_option, "second": longest, "title": longest_title,
              "count": "16", "names": "25-OH vitamine D, anticorps anti-centromère et 1,25-(OH)₂ vitamine D…",
              "ca_x_p": "16,11 mmol²/L² (199 mg²/dL²)", "calcium": "4,99 mmol/L (19,9 mg/dL)",
              "phosphate": "6,45 mmol/L (19,9 mg/dL)",
              "drug": max((concept_display(m, locale) for m in concept_ids("medication")), key=len)}
    templates = [knowledge.message("summary", key, locale) for key in knowledge.messages["summary"]]
    templates += [f.summary.get(locale) for f in knowledge.flags] + [r.summary.get(locale) for r in knowledge.risks]
    for template in templates:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        filled = template.format(**{k: values[k] for k in fields})
        assert len(filled) < SUMMARY_MAX_CHARS, (locale, filled)


def test_patient_with_everything_still_renders_valid_cards_within_budget() -> None:
    resources = [patient("p1"), condition("L94.2", sites=("371305003", "63464009", "74757004")),
                 condition("Z99.2"), condition("301364008", "snomed"), condition("46742003", "snomed"),
                 condition("M34.1"), medication("B01AA03", text="Warfarin"),
                 lab("17861-6", 14.5, "mg/dL"), lab("1751-7", 4.0, "g/dL"), lab("2777-1", 8.0, "mg/dL"),
                 *normal_chemistry()[4:]]
    facts, assessment = run(*resources)
    for locale in ("en", "fr"):
        cards = render_cards(assessment, facts, locale=locale, seed="a")
        assert {ext(c)["kind"] for c in cards} >= {"red-flag", "subtype-assessment"}
        for card in cards:
            Card.model_validate(card.to_json())
            assert len(card.detail or "") <= MAX_DETAIL_CHARS


def test_data_that_was_sent_but_not_used_is_named_on_the_card() -> None:
    facts, assessment = run(patient("p1"), condition("L94.2"), *(lab("2777-1", 4.0 + i, "mg/L") for i in range(5)))
    assert assessment.calcinosis_present
    subtype = next(c for c in render_cards(assessment, facts, locale="en", seed="s")
                   if ext(c)["kind"] == "subtype-assessment")
    assert "5 phosphate result(s) in a unit that cannot be converted" in (subtype.detail or "")


HOSTILE = [
    "[click](javascript:alert(1))",
    "![x](https://tracker.example/p.png)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "visit www.evil.example or https://evil.example/a",
    "| a | b |\n|---|---|\n| c | d |",
    "`code` ``` fence",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_request_text_cannot_inject_markdown(hostile: str) -> None:
    # The hostile text goes where request text reaches a card: a code the service does not verify.
    facts, assessment = run(
        patient("p1"), condition("L94.2", text=hostile),
        lab("49765-1", 9.8, "mg/dL", display=hostile), lab("49765-1", 9.9, "mg/dL", display=hostile),
    )
    renderer = MarkdownIt("gfm-like")
    for locale in ("en", "fr"):
        for card in render_cards(assessment, facts, locale=locale, seed="s"):
            html = renderer.render(card.detail or "")
            for tag in ("<a ", "<img", "<script", "<table", "<code"):
                assert tag not in html, html


@pytest.mark.parametrize("fixture", FIXTURES)
def test_a_bold_line_after_a_list_stays_its_own_paragraph(fixture: str) -> None:
    """Rendered as an EHR renders it: "**Aussi :** ..." must never be folded into the last list item."""
    renderer = MarkdownIt("gfm-like")
    headings = [load_knowledge().message("heading", key, "fr") for key in load_knowledge().messages["heading"]]
    for card in cards_for(fixture, "fr"):
        html = renderer.render(card.detail or "")
        for item in re.findall(r"<li>(.*?)</li>", html, flags=re.S):
            assert not any(f"<strong>{heading}" in item for heading in headings), (card.summary, item)


def test_a_status_line_stays_when_its_condition_line_is_past_the_limit() -> None:
    from datetime import UTC, datetime

    from hooks.engine.cards.lines import Ledger, evidence_lines
    from hooks.engine.cards.text import Words
    from hooks.engine.evidence import Evidence

    day = datetime(2026, 11, 1, tzinfo=UTC)
    valve = Evidence(kind="status", concept="mechanical_valve", reference="Condition/z", flags=("yes",))
    labs = [Evidence(kind="lab", concept=c, value=v, unit="mg/dL", date=day, reference=f"Observation/{c}")
            for c, v in (("calcium_total", 9.4), ("phosphate", 3.5))]
    coded = Evidence(kind="condition", concept="prosthetic_valve", reference="Condition/z", date=day)
    words = Words(load_knowledge(), "en")
    # Within the limit, the condition line says it: one fact.
    assert len(evidence_lines(words, [valve, coded], Ledger(), 3)) == 1
    # Cut off by the limit, the condition says nothing: the valve status is kept.
    lines = evidence_lines(words, [valve, *labs, coded], Ledger(), 2)
    assert any("valve" in line.lower() for line in lines)
