"""The knowledge files are coherent: a clinician's edit that breaks them fails here, not at the bedside."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any, get_args

import pytest

from fhir_mappings.facts import StatusValue
from fhir_mappings.terminology import concept_groups, concept_ids, is_emittable, loinc_codes_for
from hooks.engine.context import AgeBand
from hooks.engine.knowledge import SUBTYPES, load_knowledge
from hooks.engine.predicates import KNOWN_PREDICATES

K = load_knowledge()
ISSUE_OPTIONS = {
    "calcium-channel-blocker",
    "colchicine",
    "surgical-excision",
    "sodium-thiosulfate-topical",
    "sodium-thiosulfate-iv",
    "bisphosphonate",
    "warfarin",
    "minocycline",
    "ceftriaxone",
    "ivig",
    "probenecid",
    "aluminium-hydroxide",
    "laser",
    "shock-wave-lithotripsy",
    "stop-warfarin",
    "stop-calcium-vitamin-d",
    "non-calcium-phosphate-binder",
    "cinacalcet",
    "parathyroidectomy",
    "treat-underlying-disease",
    "wound-care",
}
WORKUP_ITEMS = [
    "calcium",
    "phosphate",
    "albumin",
    "renal-function",
    "pth",
    "vitamin-d-25",
    "vitamin-d-1-25",
    "alkaline-phosphatase",
    "magnesium",
    "bicarbonate",
    "lupus-serology",
    "ssc-serology",
    "myositis-workup",
    "ace",
]


def _predicates() -> Iterator[tuple[str, dict[str, Any]]]:
    for rule in K.rules:
        yield rule.id, rule.when
    yield from K.gates.items()
    for flag in (*K.flags, *K.risks):
        yield flag.id, flag.when
    for factor in (*K.risk_factors_major, *K.risk_factors_minor):
        yield factor.id, factor.when
    for item in K.workup:
        if item.needed_when:
            yield item.id, item.needed_when
    for option in K.options:
        if option.requires:
            yield option.id, option.requires
    for caution in K.cautions:
        yield caution.id, caution.when
    for option in K.options:
        for index, variant in enumerate(option.variants):
            yield f"{option.id}/variant-{index}", variant.when
    for flag in K.flags:
        for index, action in enumerate(flag.action_variants):
            yield f"{flag.id}/action-{index}", action.when


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            if key in {"all", "any"}:
                for child in value:
                    yield from _walk(child)
            elif key == "not":
                yield from _walk(value)


PREDICATES = list(_predicates())


@pytest.mark.parametrize(("owner", "predicate"), PREDICATES, ids=[owner for owner, _ in PREDICATES])
def test_every_predicate_and_every_code_it_names_exists(owner: str, predicate: dict[str, Any]) -> None:
    conditions = set(concept_ids("condition"))
    medications = set(concept_ids("medication"))
    drug_classes = {g for m in medications for g in concept_groups(m)}
    labs = set(concept_ids("lab"))
    sites = set(concept_ids("bodysite"))
    for key, value in _walk(predicate):
        assert key in KNOWN_PREDICATES, f"{owner}: unknown predicate {key}"
        if key == "condition":
            assert set(value) <= conditions, f"{owner}: {set(value) - conditions}"
        elif key == "medication":
            assert set(value["concepts"]) <= medications | drug_classes, owner
        elif key in {"present", "antibody_positive"}:
            assert set(value) <= labs, owner
        elif key in {"lab_high", "lab_low"}:
            assert value in labs, owner
        elif key in {"lab_above", "lab_below", "lab_at_least", "lab_uln_multiple"}:
            assert value["analyte"] in labs, owner
        elif key in {"lesion_sites", "lesions_only_in"}:
            assert set(value) <= sites, owner
        elif key == "lesion_sites_min":
            assert set(value["sites"]) <= sites, owner
        elif key == "rule":
            assert value in {r.id for r in K.rules}, owner
        elif key == "gate":
            assert value in K.gates, owner
        elif key in {"pregnancy", "breastfeeding"}:
            # Strings, never YAML 1.1 booleans: an unquoted `yes` once made the pregnancy cautions silent.
            assert set(value) <= set(get_args(StatusValue)), f"{owner}: {key} {value!r}"
        elif key == "age_band":
            assert set(value) <= set(get_args(AgeBand)), f"{owner}: age_band {value!r}"
        elif key == "subtype":
            assert set(value) <= set(SUBTYPES), owner
        elif key in {"offered", "focus"}:
            assert set(value) <= {o.id for o in K.options} | set(SUBTYPES), owner
        elif key == "medication_current":
            assert set(value) <= medications | drug_classes, owner
        elif key == "flag":
            assert value in {f.id for f in K.flags}, owner


def test_rule_table_is_complete_and_cited() -> None:
    assert [r.id for r in K.rules] == [f"R{i}" for i in range(1, 40)]
    for rule in K.rules:
        assert rule.basis
        assert rule.finding.en
        assert rule.finding.fr
        assert rule.points


def test_flags_risks_and_cautions_cite_their_sources() -> None:
    for flag in (*K.flags, *K.risks):
        assert flag.basis
        assert flag.reference in K.references
    for caution in K.cautions:
        # Every caution cites the brief's S-rules or the safety addendum (with its [Rn] sources).
        assert re.search(r"brief §6f|brief §6e|brief §9|addendum S\d\d", caution.basis), caution.id
        assert set(caution.applies_to) <= {o.id for o in K.options}
    for reference in K.references.values():
        assert reference.url is None or reference.url.startswith("https://")


def test_therapy_vocabulary_covers_the_issue() -> None:
    assert {o.id for o in K.options} >= ISSUE_OPTIONS


def test_workup_vocabulary_and_order_codes() -> None:
    assert [i.id for i in K.workup] == WORKUP_ITEMS
    assert {a.id for a in K.advisory} == {"imaging", "biopsy"}
    for item in K.workup:
        for order in (item.order, item.order_fr):
            if order is None:
                continue
            # The ordered code belongs to the analytes that satisfy the item, and may be emitted.
            assert any(order.code in loinc_codes_for(a) for a in item.satisfied_by), item.id
            assert is_emittable("http://loinc.org", order.code), item.id


def test_version_and_content_hash() -> None:
    names = ("ruleset.yaml", "rules.yaml", "red_flags.yaml", "workup.yaml", "therapy.yaml", "messages.yaml",
             "routes.yaml")
    digest = hashlib.sha256()
    for name in names:
        digest.update(
            name.encode() + b"\0" + resources.files("hooks.engine").joinpath("knowledge", name).read_bytes() + b"\0"
        )
    assert K.content_hash == digest.hexdigest()
    assert K.version.count(".") == 2


def test_thresholds_match_the_brief() -> None:
    t = K.thresholds
    assert (t["ca_x_p_critical"], t["ca_x_p_ckd_warning"], t["calcium_critical"], t["calcium_warning"]) == (
        70,
        55,
        14,
        12,
    )
    assert (K.min_score, K.min_lead) == (4, 2)


def test_yes_and_no_in_a_knowledge_file_stay_words() -> None:
    """A clinician writing ``pregnancy: [yes]`` means the word, whatever YAML 1.1 says."""
    from hooks.engine.knowledge import _parse

    assert _parse(b"when: {pregnancy: [yes, no], on: off, flag: true}") == {
        "when": {"pregnancy": ["yes", "no"], "on": "off", "flag": True}}
