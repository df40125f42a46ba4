"""Issue 15: the order checks are reviewable data, and a wrong edit refuses to load (with the check named)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fhir_mappings.terminology import is_emittable
from hooks.engine.knowledge import PACKAGE_KNOWLEDGE_DIR
from hooks.engine.order_knowledge import ORDER_CHECKS_FILE, load_order_checks, load_order_checks_from

ISSUE_CHECKS = {
    "neonatal-ceftriaxone-calcium", "calcium-vitamin-d-high-calcium", "warfarin-calciphylaxis",
    "bisphosphonate-renal", "colchicine-strong-inhibitor", "colchicine-renal", "tetracycline-child-pregnancy",
    "aluminium-ckd", "duplicate-therapy",
    # Added after the clinical review: per-product bisphosphonate limits, nutritional vitamin D (rule C7).
    "bisphosphonate-renal-30", "nutritional-vitamin-d-high-calcium",
    # Safety rules S20 / S27 (pregnancy) and S26 (a), (d)-(f) (valves) at the moment of ordering.
    "warfarin-pregnancy", "bisphosphonate-pregnancy", "doac-pregnancy-not-checked", "doac-mechanical-valve",
    "doac-biological-valve", "doac-mitral-stenosis", "denosumab-hypocalcaemia",
    "colchimax-breastfeeding", "diltiazem-conduction-disease", "diltiazem-beta-blocker",
    "diltiazem-calcineurin-inhibitor", "teriparatide-calcification", "colchicine-moderate-inhibitor",
}


def test_every_check_of_the_issue_is_there_with_a_citation_and_a_source() -> None:
    knowledge = load_order_checks()
    assert {c.id for c in knowledge.checks} == ISSUE_CHECKS
    for check in knowledge.checks:
        assert check.basis.strip()
        assert check.reference in knowledge.references
    # Critical is reserved for the red flags of brief §5d (rule C4): only the neonatal check is one.
    assert [c.id for c in knowledge.checks if c.indicator == "critical"] == ["neonatal-ceftriaxone-calcium"]


def test_alternatives_offered_are_verified_codes() -> None:
    for check in load_order_checks().checks:
        if check.alternative is not None:
            assert is_emittable(check.alternative.system, check.alternative.code)


def test_the_hash_changes_with_the_order_checks(tmp_path: Path) -> None:
    edited = tmp_path / ORDER_CHECKS_FILE
    text = (PACKAGE_KNOWLEDGE_DIR / ORDER_CHECKS_FILE).read_text(encoding="utf-8")
    edited.write_text(text.replace("within_days: neonate_days", "within_days: 8"), encoding="utf-8")
    assert load_order_checks_from(edited).content_hash != load_order_checks().content_hash


def _edited(tmp_path: Path, change: dict[str, object]) -> Path:
    document = yaml.safe_load((PACKAGE_KNOWLEDGE_DIR / ORDER_CHECKS_FILE).read_text(encoding="utf-8"))
    document["checks"][0].update(change)
    path = tmp_path / ORDER_CHECKS_FILE
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"when": {"age_below_months": 1}}, "unknown predicates"),
        ({"order": ["ceftriaxon"]}, "unknown drug concepts"),
        ({"reference": "nowhere"}, "unknown reference"),
        ({"with": {"concepts": ["iv_calcium"], "within_days": "no_such_threshold"}}, "unknown threshold"),
        ({"alternative": {"concept": "sevelamer", "system": "http://www.whocc.no/atc", "code": "V03AE03",
                          "basis": "x"}}, "not a VERIFIED sevelamer code"),
        ({"basis": ""}, "basis"),
        # Fields added after the clinical review are validated too.
        ({"except": {"concepts": ["iv_calcum"]}}, "unknown drug concepts"),
        ({"variants": [{"when": {"always": True}, "basis": "x"}]}, "needs a summary or a reason"),
        ({"variants": [{"when": {"always": True}, "for_order": ["no_such_class"], "reason": {"en": "a", "fr": "b"},
                        "basis": "x"}]}, "unknown drug concepts"),
        ({"with": None, "either_order": False}, "without_partner needs"),
        ({"unknown": [{"when": {"always": True}, "fact": "no-such-fact"}]}, "no unknown_summary message"),
        ({"alternative": {"concept": "sevelamer", "system": "http://www.whocc.no/atc", "code": "V03AE02",
                          "unless_current": ["no_such_class"], "basis": "x"}}, "unknown drug concepts"),
        ({"alternative": {"concept": "sevelamer", "system": "http://www.whocc.no/atc", "code": "V03AE02",
                          "when": {"no_such_predicate": 1}, "basis": "x"}}, "unknown predicates"),
        # Arguments are checked as `knowledge check` checks them in the other files: a misspelt one never holds.
        ({"when": {"pregnancy": ["yse"]}}, "pregnancy: unknown yse"),
        ({"when": {"valve": ["mechanicl"]}}, "valve: unknown mechanicl"),
        ({"when": {"condition": ["mitral_stenoss"]}}, "'mitral_stenoss' is not a condition concept"),
        ({"when": {"rule": "R99"}}, "rule: unknown R99"),
        ({"unknown": [{"when": {"age_band": ["newborn"]}, "fact": "birth-date"}]}, "age_band: unknown newborn"),
    ],
)
def test_a_wrong_edit_refuses_to_load(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_order_checks_from(_edited(tmp_path, change))


def test_knowledge_check_validates_the_order_checks_against_the_edited_knowledge(tmp_path: Path) -> None:
    from hooks.engine.knowledge import KNOWLEDGE_FILES
    from hooks.engine.knowledge_check import check_knowledge

    directory = tmp_path / "knowledge"
    directory.mkdir()
    for name in (*KNOWLEDGE_FILES, ORDER_CHECKS_FILE):
        (directory / name).write_bytes((PACKAGE_KNOWLEDGE_DIR / name).read_bytes())
    assert not [p for p in check_knowledge(directory)[1] if p.file == ORDER_CHECKS_FILE]
    # A reference the order checks cite disappears from ruleset.yaml: the order checks no longer load.
    ruleset = directory / "ruleset.yaml"
    ruleset.write_text(ruleset.read_text(encoding="utf-8").replace("  fda_ceftriaxone:", "  fda_ceftriaxone_x:"),
                       encoding="utf-8")
    problems = [p for p in check_knowledge(directory)[1] if p.file == ORDER_CHECKS_FILE]
    assert [p.severity for p in problems] == ["error"]
    assert "fda_ceftriaxone" in problems[0].message


def test_knowledge_check_names_each_misspelt_argument_of_the_order_checks(tmp_path: Path) -> None:
    from hooks.engine.knowledge import KNOWLEDGE_FILES
    from hooks.engine.knowledge_check import check_knowledge

    directory = tmp_path / "knowledge"
    directory.mkdir()
    for name in KNOWLEDGE_FILES:
        (directory / name).write_bytes((PACKAGE_KNOWLEDGE_DIR / name).read_bytes())
    text = (PACKAGE_KNOWLEDGE_DIR / ORDER_CHECKS_FILE).read_text(encoding="utf-8")
    edited = text.replace("- id: warfarin-pregnancy\n    order: [warfarin]\n    when: {pregnancy: [yes]}",
                          "- id: warfarin-pregnancy\n    order: [warfarin]\n    when: {pregnancy: [yess]}")
    edited = edited.replace("when: {valve: [biological]}", "when: {valve: [biologcal]}")
    assert "[yess]" in edited
    assert "biologcal" in edited
    (directory / ORDER_CHECKS_FILE).write_text(edited, encoding="utf-8")
    lines = [p.line() for p in check_knowledge(directory)[1] if p.file == ORDER_CHECKS_FILE]
    assert "ERROR   order_checks.yaml warfarin-pregnancy: pregnancy: unknown yess" in lines
    assert "ERROR   order_checks.yaml doac-biological-valve: valve: unknown biologcal" in lines
