"""Writes ``bench/fixtures/dialysis-patient-view.json``: the patient-view call of issue 14's measurement.

A haemodialysis patient with calciphylaxis on warfarin
(``tests/fixtures/calcinosis/calciphylaxis_dialysis_warfarin.json``,
15 resources) plus nine earlier monthly results of each of its five analytes (calcium, phosphate, albumin, PTH,
creatinine), as a dialysis unit's chart holds them: about 60 resources. The prefetch is built by the tests'
``build_prefetch`` from the service's own templates, so it is exactly what an EHR would send.

    .venv/bin/python bench/dialysis_fixture.py   # rewrites the file; review the diff
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hooks.services.calcinosis import prefetch_templates  # noqa: E402
from tests.integration.prefetch_builder import build_prefetch  # noqa: E402

SOURCE = ROOT / "tests" / "fixtures" / "calcinosis" / "calciphylaxis_dialysis_warfarin.json"
TARGET = ROOT / "bench" / "fixtures" / "dialysis-patient-view.json"
EARLIER_MONTHS = 9
# Month-to-month drift of each analyte's value (a dialysis patient's phosphate and PTH move most).
DRIFT = {"cal-ca": 0.1, "cal-p": 0.3, "cal-alb": 0.05, "cal-pth": 20.0, "cal-creat": 0.2}


def _earlier(observation: dict[str, Any], month: int) -> dict[str, Any]:
    earlier = copy.deepcopy(observation)
    earlier["id"] = f"{observation['id']}-m{month}"
    # Results fed from the dialysis unit's analyser interface often come without a category.
    earlier.pop("category", None)
    when = datetime.fromisoformat(observation["effectiveDateTime"]) - timedelta(days=30 * month)
    earlier["effectiveDateTime"] = when.isoformat()
    value = observation["valueQuantity"]["value"]
    step = DRIFT[observation["id"]] * (1 if month % 2 else -1)
    earlier["valueQuantity"]["value"] = round(value + step * ((month % 3) + 1), 2)
    return earlier


def dialysis_request() -> dict[str, Any]:
    bundle = json.loads(SOURCE.read_text(encoding="utf-8"))
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    for observation in observations:
        for month in range(1, EARLIER_MONTHS + 1):
            earlier = _earlier(observation, month)
            bundle["entry"].append({"fullUrl": f"Observation/{earlier['id']}", "resource": earlier})
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    context = {"userId": "Practitioner/bench", "patientId": patient_id}
    return {
        "hookInstance": "00000000-0000-4000-8000-000000000000",
        "hook": "patient-view",
        "context": context,
        "prefetch": build_prefetch(bundle, prefetch_templates(), context),
    }


if __name__ == "__main__":
    request = dialysis_request()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(json.dumps(request, separators=(",", ":")).encode() + b"\n")
    count = sum(len(v.get("entry", ())) if v.get("resourceType") == "Bundle" else 1
                for v in request["prefetch"].values() if isinstance(v, dict))
    print(f"{TARGET.relative_to(ROOT)}: {count} resources, {TARGET.stat().st_size:,} bytes")
