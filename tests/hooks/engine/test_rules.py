"""Every rule of the scoring table (brief §5c) fires on FHIR input that shows its finding, and not without it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.conftest import run, with_calcinosis

BUTTOCK, THIGH, KNEE, ELBOW, HEEL, ABDOMEN, SCROTUM = (
    "22180002", "371305003", "63464009", "74757004", "84607009", "75093004", "81992007",
)


def _case(rule: str) -> list[dict[str, Any]]:
    cases: dict[str, list[dict[str, Any]]] = {
        "R1": with_calcinosis(condition("M34.1")),
        "R2": with_calcinosis(condition("M34.9")),
        "R3": with_calcinosis(condition("M33.00")),
        "R4": with_calcinosis(condition("396230008", "snomed")),
        "R5": with_calcinosis(condition("M32.9", "cim10")),
        "R6": with_calcinosis(condition("398049005", "snomed")),
        "R7": with_calcinosis(lab("16570-4", negative=False, days_ago=100)),
        "R8": with_calcinosis(condition("F11.20"), sites=(BUTTOCK,)),
        "R9": with_calcinosis(condition(None, text="calcinosis at the site of an old trauma")),
        "R10": with_calcinosis(*normal_chemistry()),
        "R11": with_calcinosis(lab("17861-6", 11.4, "mg/dL"), lab("1751-7", 4.0, "g/dL")),
        "R12": with_calcinosis(lab("2777-1", 5.6, "mg/dL")),
        "R13": with_calcinosis(lab("17861-6", 10.2, "mg/dL"), lab("1751-7", 4.2, "g/dL"), lab("2777-1", 7.0, "mg/dL")),
        "R14": with_calcinosis(condition("N18.4")),
        "R15": with_calcinosis(condition("Z99.2")),
        "R16": with_calcinosis(condition("Z94.0")),
        "R17": with_calcinosis(condition("E21.0")),
        "R18": with_calcinosis(condition("E21.1"), condition("N18.4")),
        "R19": with_calcinosis(condition("E67.3")),
        "R20": with_calcinosis(condition("D86.9")),
        "R21": with_calcinosis(
            lab("17861-6", 11.6, "mg/dL"), lab("1751-7", 4.1, "g/dL"), lab("1963-8", 33, "mmol/L"),
            lab("2160-0", 1.9, "mg/dL", ref=(0.5, 1.1)), medication("A12AA04", text="Calcium carbonate"),
        ),
        "R22": with_calcinosis(condition("M88.9")),
        "R23": with_calcinosis(sites=(KNEE, ELBOW)),
        "R24": with_calcinosis(sites=(SCROTUM,)),
        "R25": with_calcinosis(*normal_chemistry(), lab("8061-4", negative=True)),
        "R26": with_calcinosis(medication("A12AA03", text="Calcium gluconate IV", status="completed", days_ago=20)),
        "R27": with_calcinosis(condition("T80.818A")),
        "R28": [patient("p1", birth="2026-05-01"), condition("L94.2", sites=(HEEL,)), condition("Y84.7")],
        "R29": with_calcinosis(medication("B01AB05", text="Enoxaparin"), sites=(ABDOMEN,)),
        "R30": with_calcinosis(medication("J04AA01", text="Aminosalicylic acid")),
        "R31": with_calcinosis(condition("301364008", "snomed"), condition("46742003", "snomed")),
        "R32": with_calcinosis(condition("301364008", "snomed"), condition("46742003", "snomed", sites=(THIGH,))),
        "R33": with_calcinosis(medication("B01AA03", text="Warfarin")),
        "R34": with_calcinosis(condition("E66.9")),
        "R35": with_calcinosis(condition("E11.9")),
        "R36": with_calcinosis(lab("1751-7", 2.5, "g/dL")),
        "R37": with_calcinosis(condition("N18.4"), medication("A12AA04", text="Calcium carbonate")),
        "R38": with_calcinosis(condition(None, text="Skin biopsy: calciphylaxis with medial vascular calcification")),
        "R39": with_calcinosis(condition("237900002", "snomed")),
    }
    return cases[rule]


RULES = [f"R{i}" for i in range(1, 40)]


@pytest.mark.parametrize("rule", RULES)
def test_rule_fires_on_its_finding(rule: str) -> None:
    _, assessment = run(*_case(rule))
    assert rule in assessment.rules_fired
    hit = next(h for h in assessment.hits if h.rule.id == rule)
    # Criterion 4: every rule shows what it used, except pure-absence rules.
    assert hit.evidence or rule == "R25"


@pytest.mark.parametrize("rule", RULES)
def test_rule_silent_on_bare_calcinosis(rule: str) -> None:
    _, assessment = run(*with_calcinosis())
    assert rule not in assessment.rules_fired


def test_points_are_added_per_subtype_as_in_the_table() -> None:
    _, assessment = run(*with_calcinosis(condition("M34.1"), *normal_chemistry()))
    # R1 (dystrophic +4, idiopathic -3) + R10 (dystrophic +2, metastatic -4, idiopathic +1, iatrogenic +1,
    # calciphylaxis -1).
    assert assessment.scores == {"dystrophic": 6, "metastatic": -4, "idiopathic": -2, "iatrogenic": 1,
                                 "calciphylaxis": -1}


def test_refuted_and_resolved_conditions_do_not_fire() -> None:
    _, refuted = run(*with_calcinosis(condition("M34.1", verification="refuted")))
    _, resolved = run(*with_calcinosis(condition("M34.1", clinical="resolved")))
    _, entered_in_error = run(*with_calcinosis(condition("M34.1", verification="entered-in-error")))
    for assessment in (refuted, resolved, entered_in_error):
        assert "R1" not in assessment.rules_fired


def test_old_values_are_history_only_and_never_fire_a_rule() -> None:
    # Rule C1: a phosphate of 400 days ago is outside the 90-day chemistry window.
    _, assessment = run(*with_calcinosis(lab("2777-1", 7.5, "mg/dL", days_ago=400)))
    assert "R12" not in assessment.rules_fired


def test_ca_x_p_thresholds_are_adult_only() -> None:
    # Rule C6: a child's Ca x P above 70 fires neither R13 nor a red flag.
    child = patient("p1", birth="2018-01-01")
    _, assessment = run(child, condition("L94.2", sites=(KNEE,)), lab("17861-6", 10.2, "mg/dL"),
                        lab("1751-7", 4.2, "g/dL"), lab("2777-1", 7.2, "mg/dL"))
    assert "R13" not in assessment.rules_fired
    assert not [f for f in assessment.flags if "calcium-phosphate" in f.id]
