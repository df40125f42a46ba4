"""The assessment snapshot kept in the audit record (issue 12), as the assessment page reads it."""

from __future__ import annotations

from typing import Any

from hooks.engine.snapshot import assessment_snapshot
from tests.fhir_builders import lab
from tests.hooks.engine.conftest import run, with_calcinosis


def at(resource: dict[str, Any], moment: str) -> dict[str, Any]:
    return {**resource, "effectiveDateTime": moment}


def test_each_time_is_written_as_the_ehr_sent_it_even_when_two_are_the_same_instant() -> None:
    # The snapshot writes each moment once per distinct time and offset (issue 14); 10:00+01:00 and 09:00Z are
    # the same instant, and an auditor must still read each result's time as the laboratory reported it.
    calcium = at(lab("17861-6", 11.2, "mg/dL"), "2026-11-16T10:00:00+01:00")
    phosphate = at(lab("2777-1", 6.1, "mg/dL"), "2026-11-16T09:00:00+00:00")
    albumin = at(lab("1751-7", 4.1, "g/dL"), "2026-11-16T10:00:00+01:00")
    facts, assessment = run(*with_calcinosis(calcium, phosphate, albumin))
    series = assessment_snapshot(assessment, facts)["series"]
    assert [p["at"] for p in series["calcium_total"]["points"]] == ["2026-11-16T10:00:00+01:00"]
    assert [p["at"] for p in series["phosphate"]["points"]] == ["2026-11-16T09:00:00+00:00"]
    evidence_dates = {e["date"] for rule in assessment_snapshot(assessment, facts)["rules"] for e in rule["evidence"]
                      if e.get("concept") == "phosphate"}
    assert evidence_dates <= {"2026-11-16T09:00:00+00:00"}
