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
    edited.write_text(text.replace("within_days: 7", "within_days: 8"), encoding="utf-8")
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
    ],
)
def test_a_wrong_edit_refuses_to_load(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_order_checks_from(_edited(tmp_path, change))
