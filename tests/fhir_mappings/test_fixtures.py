"""The six synthetic bundles of tests/fixtures/fhir-data read end to end (see the README there)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings import build_facts, classify_prefetch_value
from fhir_mappings.facts import PatientFacts

DATA = Path(__file__).parents[1] / "fixtures" / "fhir-data"
ELVIRA = "pysynthea-generated/pysynthea_sle_t2dm_ckd3_Elvira_Segura.json"
MACHELLE = "pysynthea-generated/pysynthea_sle_ckd4_esrd_dialysis_Machelle_Johns.json"
DIRK = "smart-on-fhir-synthea/Dirk_Kuhlman_1e503533-b8c2-42cb-a6d5-bbd7d70d07ad.json"
CKD3_A = "carebundle-generated/ckd_stage3-7-0000.json"
CKD3_B = "carebundle-generated/ckd_stage3-7-0001.json"
T2D = "carebundle-generated/type2_diabetes-8-0000.json"
ALL = [ELVIRA, MACHELLE, DIRK, CKD3_A, CKD3_B, T2D]


def read(relative: str, now: datetime) -> PatientFacts:
    bundle: dict[str, Any] = json.loads((DATA / relative).read_text(encoding="utf-8"))
    prefetch = classify_prefetch_value(bundle)
    assert prefetch.kind == "present"
    assert prefetch.issues == ()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in prefetch.resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    (patient,) = by_type["Patient"]
    return build_facts(
        patient=patient,
        observations=by_type.get("Observation", []),
        conditions=by_type.get("Condition", []),
        medications=by_type.get("MedicationRequest", []),
        now=now,
    )


@pytest.mark.parametrize("relative", ALL)
def test_every_bundle_parses_without_malformed_resources(relative: str) -> None:
    result = read(relative, datetime(2026, 1, 25, tzinfo=UTC))
    assert result.sex in {"female", "male"}
    assert result.birth_date is not None
    assert not [issue for issue in result.issues if issue.kind in {"malformed-resource", "unexpected-resource"}]


def test_elvira_segura_sle_and_ckd3() -> None:
    # now = the newest serum calcium (2025-08-29T16:31:04) + 1 day.
    result = read(ELVIRA, datetime(2025, 8, 30, 16, 31, tzinfo=UTC))
    assert (result.sex, str(result.birth_date)) == ("female", "1959-03-20")
    assert {"sle", "diabetes", "ckd_3"} <= {c.concept for c in result.active_conditions("sle", "diabetes", "ckd_3")}

    # Observation 4db2fd07-…: 17861-6, 8.6 mg/dL on 2025-08-29, lab range 8.6–10.3, interpretation N.
    calcium = result.latest("calcium_total")
    assert calcium is not None
    assert (calcium.value, calcium.unit) == (8.6, "mg/dL")
    assert calcium.effective == datetime(2025, 8, 29, 16, 31, 4, 863289, tzinfo=UTC)
    assert calcium.provenance.resource_id == "4db2fd07-f057-43e2-889b-c6ea9bc4e20b"
    assert calcium.reference_range is not None
    assert (calcium.reference_range.low, calcium.reference_range.high) == (8.6, 10.3)
    assert calcium.is_low is False

    # Phosphate 2777-1 was last drawn on 2010-08-19 (Observation 41688124-…, 3.0468 mg/dL): history only (C1).
    phosphate = result.labs["phosphate"]
    assert phosphate.latest is None
    assert len(phosphate.history) == 12
    assert phosphate.history[0].provenance.resource_id == "41688124-a8d1-403c-ba42-5a322129d4e0"
    assert phosphate.history[0].value == pytest.approx(3.0468032532656846)
    assert phosphate.history[0].effective == datetime(2010, 8, 19, 4, 31, 4, 863289, tzinfo=UTC)
    assert "ca_x_p" not in result.derived

    # Two 33914-3 results share the 2025-08-29 timestamp (33.45 and 18.5); the first one sent is kept.
    egfr = result.latest("egfr")
    assert egfr is not None
    assert egfr.provenance.resource_id == "41fa37ff-03ef-4ab9-95cb-23d9056f431f"
    assert egfr.value == pytest.approx(33.44859454506085)
    assert egfr.unit == "mL/min/{1.73_m2}"
    assert result.ckd is not None
    assert (result.ckd.stage, result.ckd.source) == ("G3b", "egfr")

    # No albumin or ionized calcium within 48 h of the calcium: used uncorrected (rule C2).
    assert result.derived["calcium_corrected"].flags == ("uncorrected",)
    # Some eGFR results are sent in "mL/min": an eGFR code is per 1.73 m² by definition, so they are read
    # with a flag the card shows (issue 11), not dropped.
    per_bsa = [v for v in result.labs["egfr"].history if "unit-read-as-per-1.73m2" in v.flags]
    assert per_bsa
    assert all(v.provenance.code == "33914-3" for v in per_bsa)
    # Synthea's "Calcium in Blood" (49765-1) is not a verified code: named as such, never read as a calcium.
    assert {i.kind for i in result.issues} == {"unverified-lab-code"}
    assert all("49765-1" in i.detail and "not a laboratory code this service has verified" in i.detail
               for i in result.issues)


def test_carebundle_ckd_patient_coded_only_in_icd10cm() -> None:
    # Condition N18.32 (ICD-10-CM only) and eGFR 98979-8 = 38 on 2026-01-01: both say G3b.
    result = read(CKD3_A, datetime(2026, 1, 2, tzinfo=UTC))
    assert [(c.concept, c.provenance.code) for c in result.active_conditions("ckd_3b")] == [("ckd_3b", "N18.32")]
    assert result.ckd is not None
    assert result.ckd.stage == "G3b"
    assert result.latest("egfr").value == 38  # type: ignore[union-attr]
    assert result.latest("calcium_total").value == 9.1  # type: ignore[union-attr]
    # Albumin 4.3 g/dL drawn with the calcium: no correction at albumin >= 4.0 by default (§4b).
    assert result.derived["calcium_corrected"].flags == ("albumin-at-least-4",)


def test_carebundle_stage_is_never_less_severe_than_the_icd_code() -> None:
    result = read(CKD3_B, datetime(2026, 1, 2, tzinfo=UTC))
    assert result.ckd is not None
    assert result.ckd.stage in {"G3b", "G4", "G5"}


def test_synthea_calcium_in_blood_is_not_read() -> None:
    # Dirk Kuhlman has nine 49765-1 "Calcium in Blood" results and no serum calcium code of the brief.
    result = read(DIRK, datetime(2021, 3, 3, tzinfo=UTC))
    assert "calcium_total" not in result.labs
    assert result.latest("creatinine") is not None
    assert result.latest("creatinine").provenance.code == "38483-4"  # type: ignore[union-attr]


def test_machelle_johns_resolved_esrd_is_not_active() -> None:
    result = read(MACHELLE, datetime(2025, 5, 18, tzinfo=UTC))
    assert {c.concept for c in result.conditions} >= {"sle", "esrd", "ckd_4"}
    assert result.active_conditions("esrd", "ckd_4") == ()
    assert result.ckd is not None
    assert result.ckd.dialysis is False
