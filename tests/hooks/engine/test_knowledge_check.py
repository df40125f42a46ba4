"""``calcinosis-cds knowledge check``: an edited copy of the knowledge is checked, and its effect on the
fixture patients' cards is shown as a before/after table, before the edit ships."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from hooks.cli import main
from hooks.engine.knowledge import KNOWLEDGE_FILES, PACKAGE_KNOWLEDGE_DIR, load_knowledge, load_knowledge_from
from hooks.engine.knowledge_check import check_knowledge
from hooks.engine.knowledge_diff import FIXTURES_NOW, compare_fixtures, fixture_bundles
from tests.hooks.engine.conftest import CALCINOSIS_FIXTURES

SHIPPED = load_knowledge().version
SHIPPED_LINE = f'version: "{SHIPPED}"'


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    directory = tmp_path / "knowledge"
    directory.mkdir()
    for name in KNOWLEDGE_FILES:
        shutil.copy(PACKAGE_KNOWLEDGE_DIR / name, directory / name)
    return directory


def edit(directory: Path, name: str, old: str, new: str, count: int = 1) -> None:
    path = directory / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= count, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def problems_of(directory: Path) -> list[str]:
    _, problems = check_knowledge(directory)
    return [problem.line() for problem in problems]


def test_the_shipped_knowledge_passes() -> None:
    knowledge, problems = check_knowledge(PACKAGE_KNOWLEDGE_DIR)
    assert problems == []
    assert knowledge == load_knowledge()


def test_loading_from_a_directory_does_not_touch_the_services_knowledge(edited: Path) -> None:
    edit(edited, "ruleset.yaml", SHIPPED_LINE, 'version: "9.9.9"')
    assert load_knowledge_from(edited).version == "9.9.9"
    assert load_knowledge().version == SHIPPED


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    ("rules.yaml", "when: {lab_high: phosphate}", "when: {lab_hihg: phosphate}",
     "ERROR   rules.yaml R12: unknown predicate 'lab_hihg'"),
    ("rules.yaml", "when: {condition: [limited_ssc]}", "when: {condition: [limited_scc]}",
     "ERROR   rules.yaml R1: condition: 'limited_scc' is not a condition concept of the code tables"),
    ("rules.yaml", "when: {lab_high: phosphate}", "when: {lab_high: phosphorus}",
     "ERROR   rules.yaml R12: lab_high: 'phosphorus' is not a lab concept of the code tables"),
    ("red_flags.yaml", "ca_x_p_at_least: ca_x_p_critical", "ca_x_p_at_least: ca_x_p_critcal",
     "ERROR   red_flags.yaml high-calcium-phosphate-product: ca_x_p_at_least: 'ca_x_p_critcal' is not a threshold"
     " of ruleset.yaml"),
    ("therapy.yaml", "{pregnancy: [yes]}", "{pregnancy: [true]}",
     'ERROR   therapy.yaml S23: pregnancy: unknown True; true/false are YAML booleans: write the status as a word '
     '("yes", no)'),
    ("therapy.yaml", '    when: {mechanical_valve: true}\n    text: {en: "Mechanical valve: never',
     '    when: {valve: [mechanicl]}\n    text: {en: "Mechanical valve: never',
     "ERROR   therapy.yaml S26b: valve: unknown mechanicl"),
    ("red_flags.yaml", "reference: consensus2023", "reference: consensus2033",
     "ERROR   red_flags.yaml suspected-calciphylaxis: reference 'consensus2033' is not in ruleset.yaml"),
    ("rules.yaml", 'basis: "seed 001"', 'basis: " "',
     "ERROR   rules.yaml R9: no citation (basis)"),
    ("messages.yaml", "  cinacalcet: {en: \"cinacalcet\", fr: \"cinacalcet\"}\n", "",
     "ERROR   messages.yaml option_labels.cinacalcet: missing: the cards need this text"),
    ("messages.yaml", 'fr: "Calcinose cutanée\\u00a0: sous-type {subtype} probable"',
     'fr: "Calcinose cutanée\\u00a0: sous-type {sous_type} probable"',
     "ERROR   messages.yaml summary.subtype: placeholders differ: en ['subtype'], fr ['sous_type']"),
    ("messages.yaml", 'suspected: {en: "suspected", fr: "à confirmer"}', 'suspected: {en: "suspected", fr: ""}',
     "ERROR   messages.yaml text.suspected: no French text"),
    ("messages.yaml", 'calcium: {conventional: ["mg/dL", 1.0, 1]', 'calcium: {conventional: ["mg/dL", 0, 1]',
     "ERROR   messages.yaml units.calcium.conventional: expected [unit, factor > 0, decimals 0-3]"),
    ("workup.yaml", 'code: "6768-6"', 'code: "6768-0"',
     "ERROR   workup.yaml alkaline-phosphatase: order code LOINC 6768-0 is not a code of alp in the code tables"),
    ("ruleset.yaml", 'url: "https://pubmed.ncbi.nlm.nih.gov/21679810/"', 'url: "http://pubmed.ncbi.nlm.nih.gov/x"',
     "ERROR   ruleset.yaml references.reiter2011: a cited URL must be https"),
])
def test_an_edit_that_breaks_the_knowledge_is_named(edited: Path, name: str, old: str, new: str,
                                                    expected: str) -> None:
    edit(edited, name, old, new)
    found = problems_of(edited)
    assert expected in found, found


def test_a_content_change_without_a_new_version_is_a_warning(edited: Path) -> None:
    edit(edited, "ruleset.yaml", "calcium_critical: 14.0", "calcium_critical: 13.5")
    assert problems_of(edited) == [
        f"WARNING ruleset.yaml version: the content changed but the version is still {SHIPPED}: bump it so the "
        "audit trail can tell the two apart"]
    edit(edited, "ruleset.yaml", SHIPPED_LINE, 'version: "9.0.1"')
    assert problems_of(edited) == []


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda d: (d / "workup.yaml").unlink(), "ERROR   workup.yaml file: missing"),
    (lambda d: (d / "rules.yaml").write_text("rules: [unclosed", encoding="utf-8"), "ERROR   rules.yaml YAML"),
    (lambda d: edit(d, "rules.yaml", "    basis: \"seed 001\"\n", "    basis: \"seed 001\"\n    weight: 2\n"),
     "ERROR   rules.yaml RuleDefinition weight: Extra inputs are not permitted"),
    (lambda d: edit(d, "routes.yaml", "  ophthalmic: {en:", "  ophtalmic: {en:"),
     "ERROR   routes.yaml RouteVocabulary : Value error, shown names routes that `routes` does not define: ophtalmic"),
    (lambda d: edit(d, "routes.yaml", ', fr: "collyre"}', "}"),
     "ERROR   routes.yaml RouteVocabulary shown.ophthalmic.fr: Field required"),
])
def test_a_directory_that_does_not_load_says_which_file(edited: Path, break_it: Callable[[Path], object],
                                                        expected: str) -> None:
    break_it(edited)
    knowledge, problems = check_knowledge(edited)
    assert knowledge is None
    assert any(p.line().startswith(expected) for p in problems), [p.line() for p in problems]


def test_the_before_after_table_shows_what_a_points_change_does(edited: Path) -> None:
    # R12 (phosphate above the upper limit) now favours calciphylaxis over metastatic.
    old = "when: {lab_high: phosphate}\n    points: {dystrophic: -2, metastatic: 3, idiopathic: -3, calciphylaxis: 1}"
    edit(edited, "rules.yaml", old, old.replace("metastatic: 3", "metastatic: 0").replace("calciphylaxis: 1",
                                                                                          "calciphylaxis: 12"))
    result = compare_fixtures(fixture_bundles(CALCINOSIS_FIXTURES), load_knowledge(), load_knowledge_from(edited),
                              FIXTURES_NOW)
    changed = {(c.patient, c.card): (c.before, c.after) for c in result.changes}
    assert changed[("metastatic_ckd4_hyperparathyroidism", "subtype-assessment")] == (
        "warning: Calcinosis cutis: likely metastatic subtype",
        "warning: Calcinosis cutis: likely calciphylaxis subtype")
    before, after = changed[("metastatic_ckd4_hyperparathyroidism", "subtype-assessment scores")]
    assert before.startswith("metastatic 20, calciphylaxis 10")
    assert after.startswith("calciphylaxis 21, metastatic 17")
    assert "silent_ckd3_normal_labs" in result.unchanged
    assert result.failures == 0


def test_the_command_prints_problems_and_the_table(edited: Path) -> None:
    edit(edited, "ruleset.yaml", SHIPPED_LINE, 'version: "9.1.0"')
    edit(edited, "messages.yaml", 'subtype: {en: "Calcinosis cutis: likely {subtype} subtype"',
         'subtype: {en: "Calcinosis cutis: probably {subtype}"')
    output = io.StringIO()
    with redirect_stdout(output):
        status = main(["knowledge", "check", str(edited), "--fixtures", str(CALCINOSIS_FIXTURES), "--locale", "all"])
    text = output.getvalue()
    assert status == 0
    assert f"version {SHIPPED} -> 9.1.0" in text
    assert "0 error(s), 0 warning(s)" in text
    assert "| patient " in text
    assert "| locale |" in text
    assert "| warning: Calcinosis cutis: likely metastatic subtype | warning: Calcinosis cutis: probably metastatic |" \
        in text.replace("  ", " ").replace("  ", " ")
    assert "patient(s) unchanged" in text
    assert "sous-type métastatique probable" not in text  # the French cards did not change


def test_the_command_fails_on_errors_and_on_an_engine_that_breaks(edited: Path) -> None:
    edit(edited, "rules.yaml", "when: {lab_high: phosphate}", "when: {lab_hihg: phosphate}")
    output = io.StringIO()
    with redirect_stdout(output):
        status = main(["knowledge", "check", str(edited), "--fixtures", str(CALCINOSIS_FIXTURES)])
    text = output.getvalue()
    assert status == 1
    assert "unknown predicate 'lab_hihg'" in text
    assert "ERROR UnknownPredicate: lab_hihg" in text
    assert "could not be assessed with the edit" in text


def test_the_command_on_the_shipped_knowledge_changes_nothing() -> None:
    output = io.StringIO()
    with redirect_stdout(output):
        status = main(["knowledge", "check", "--fixtures", str(CALCINOSIS_FIXTURES)])
    assert status == 0
    assert "No card changes." in output.getvalue()
    assert f"{len(list(CALCINOSIS_FIXTURES.glob('*.json')))} of " in output.getvalue()
