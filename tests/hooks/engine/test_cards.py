"""Cards as the clinician and the EHR see them: contract, languages, indicators, suggestions."""

from __future__ import annotations

import itertools
import re
import string
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from hooks.engine.cards import EXTENSION_KEY, render_cards
from hooks.engine.knowledge import load_knowledge
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


def cards_for(fixture: str, locale: str = "en", seed: str = "hook-1") -> list[Card]:
    pid, resources = fixture_resources(fixture)
    from hooks.engine.service import assess_resources

    facts, assessment = assess_resources(resources, patient_id=pid, now=NOW)
    return render_cards(assessment, facts, locale=locale, seed=seed)


def ext(card: Card) -> dict[str, Any]:
    assert card.extension is not None
    value: dict[str, Any] = card.extension[EXTENSION_KEY]
    return value


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_every_card_honours_the_public_contract(fixture: str, locale: str) -> None:
    cards = cards_for(fixture, locale)
    uuids = [c.uuid for c in cards]
    assert len(set(uuids)) == len(uuids)
    assert all(uuids)
    for card in cards:
        assert (card.source.label and card.source.url is None) or str(card.source.url).startswith("https://")
        assert len(card.summary) <= SUMMARY_MAX_CHARS
        contract = ext(card)
        kind = contract["kind"]
        assert card.detail
        if kind in {"subtype-assessment", "red-flag", "risk"}:
            assert "`" in card.detail  # evidence cites its source resources
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
            assert all(c["option"] in known and c["reason"] for c in contract["cautions"])
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


def test_silent_fixture_renders_no_cards() -> None:
    assert cards_for("silent_ckd3_normal_labs.json") == []


def test_missing_workup_suggestions_are_valid_r4_draft_service_requests() -> None:
    cards = cards_for("seed000_heroin_injection_dystrophic.json")
    card = next(c for c in cards if ext(c)["kind"] == "missing-workup")
    assert card.suggestions
    for suggestion in card.suggestions:
        assert suggestion.uuid
        assert suggestion.actions
        assert len(suggestion.actions) == 1
        action = suggestion.actions[0]
        assert action.type == "create"
        resource = action.resource
        assert resource is not None
        request = ServiceRequest.model_validate(resource)
        assert request.status == "draft"
        assert request.intent == "proposal"
        assert request.subject.reference == "Patient/seed000-heroin"
        coding = request.code.coding[0]
        assert coding.system == "http://loinc.org"
        from fhir_mappings.terminology import is_emittable, lookup

        match = lookup("http://loinc.org", coding.code)
        assert match is not None
        assert is_emittable("http://loinc.org", coding.code)


def test_french_cards_order_si_unit_codes() -> None:
    _, resources = fixture_resources("seed000_heroin_injection_dystrophic.json")
    resources = [r for r in resources if r["resourceType"] != "Observation"]
    from hooks.engine.service import assess_resources

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
    subtype_fr = next(c for c in french if ext(c)["kind"] == "subtype-assessment")
    assert "métastatique" in subtype_fr.summary


def test_uuids_are_stable_per_hook_instance_and_differ_between_calls() -> None:
    first = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-A")
    again = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-A")
    other = cards_for("calciphylaxis_dialysis_warfarin.json", seed="hook-B")
    assert [c.uuid for c in first] == [c.uuid for c in again]
    assert not {c.uuid for c in first} & {c.uuid for c in other}


def test_red_flags_come_first_and_critical_before_warning() -> None:
    cards = cards_for("calciphylaxis_dialysis_warfarin.json")
    kinds = [(ext(c)["kind"], c.indicator) for c in cards]
    assert kinds[0] == ("red-flag", "critical")
    flag_positions = [i for i, (k, _) in enumerate(kinds) if k == "red-flag"]
    assert flag_positions == list(range(len(flag_positions)))


def test_subtype_card_indicator_warns_for_metabolic_causes_only() -> None:
    indicators = {}
    for fixture in FIXTURES:
        for card in cards_for(fixture):
            if ext(card)["kind"] == "subtype-assessment":
                indicators[ext(card)["subtype"]] = card.indicator
    assert indicators["metastatic"] == "warning"
    assert indicators["calciphylaxis"] == "warning"
    assert indicators["dystrophic"] == "info"
    assert indicators["iatrogenic"] == "info"


def test_detail_shows_values_units_dates_and_the_rule_basis() -> None:
    card = next(c for c in cards_for("metastatic_ckd4_hyperparathyroidism.json")
                if ext(c)["kind"] == "subtype-assessment")
    detail = card.detail or ""
    assert "`Observation/met-p`" in detail
    assert "6 mg/dL" in detail
    assert (NOW.date().isoformat()[:8]) in detail  # dated inputs
    assert "R18" in detail
    assert "Hayashi" in detail
    assert "1.0.0" in detail


@pytest.mark.parametrize("locale", ["en", "fr"])
def test_every_summary_template_fits_under_140_characters(locale: str) -> None:
    # Fill each template with its longest plausible values, in both languages.
    knowledge = load_knowledge()
    longest_subtype = max((knowledge.message("subtype_names", s, locale) for s in SUBTYPES), key=len)
    values = {"subtype": longest_subtype, "first": longest_subtype, "second": longest_subtype, "score": "-99",
              "runner_up": "-99", "count": "16", "cautions": "16", "ca_x_p": "199,99 mg²/dL²",
              "calcium": "19,99 mg/dL", "phosphate": "19,99 mg/dL"}
    templates = [knowledge.message("summary", key, locale) for key in knowledge.messages["summary"]]
    templates += [f.summary.get(locale) for f in knowledge.flags] + [r.summary.get(locale) for r in knowledge.risks]
    for template in templates:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        filled = template.format(**{k: values[k] for k in fields})
        assert len(filled) <= SUMMARY_MAX_CHARS, (locale, filled)


def test_patient_with_everything_still_renders_valid_cards() -> None:
    _, assessment = run(patient("p1"), condition("L94.2", sites=("371305003", "63464009", "74757004")),
                        condition("Z99.2"), condition("301364008", "snomed"), condition("46742003", "snomed"),
                        condition("M34.1"), medication("B01AA03", text="Warfarin"),
                        lab("17861-6", 14.5, "mg/dL"), lab("1751-7", 4.0, "g/dL"), lab("2777-1", 8.0, "mg/dL"),
                        *normal_chemistry()[4:])
    facts, _ = run(patient("p1"))
    for locale, seed in itertools.product(("en", "fr"), ("a", "b")):
        cards = render_cards(assessment, facts, locale=locale, seed=seed)
        # Metabolic gate + calciphylaxis pattern: a mixed picture, so indeterminate and no therapy card.
        assert {ext(c)["kind"] for c in cards} >= {"red-flag", "subtype-assessment"}
        for card in cards:
            Card.model_validate(card.to_json())


def test_unusable_values_are_summarised_on_the_card() -> None:
    # Values in a unit the service does not know are reported, never guessed (and not one line each).
    _, assessment = run(patient("p1"), condition("L94.2"), *(lab("2777-1", 4.0 + i, "mg/L") for i in range(5)))
    assert assessment.calcinosis_present
    assert len(assessment.unusable) == 1
    assert "×5" in assessment.unusable[0]
    facts, _ = run(patient("p1"))
    detail = render_cards(assessment, facts, locale="en", seed="s")[0].detail or ""
    assert "Missing or unusable data" in detail
    assert "×5" in detail
