"""Helpers for engine tests: FHIR resources -> PatientFacts -> Assessment, evaluated at a fixed date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fhir_mappings.facts import PatientFacts
from hooks.engine.assessment import Assessment
from hooks.engine.service import assess_resources
from tests.fhir_builders import NOW, condition, patient

CALCINOSIS_FIXTURES = Path(__file__).parents[2] / "fixtures" / "calcinosis"
FOREARM = "5742000"


def run(*resources: dict[str, Any], pid: str = "p1") -> tuple[PatientFacts, Assessment]:
    pool = list(resources)
    if not any(r["resourceType"] == "Patient" for r in pool):
        pool.insert(0, patient(pid))
    return assess_resources(pool, patient_id=pid, now=NOW)


def with_calcinosis(*resources: dict[str, Any], sites: tuple[str, ...] = (FOREARM,)) -> list[dict[str, Any]]:
    """An adult woman with calcinosis cutis (L94.2) at the given sites, plus ``resources``."""
    return [patient("p1"), condition("L94.2", sites=sites, text="Calcinosis cutis"), *resources]


def fixture_resources(name: str) -> tuple[str, list[dict[str, Any]]]:
    bundle = json.loads((CALCINOSIS_FIXTURES / name).read_text(encoding="utf-8"))
    resources = [entry["resource"] for entry in bundle["entry"]]
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    return pid, resources
