"""Trims PySynthea (PyPI ``tietai-synthea``) patient bundles to what a patient-view prefetch holds.

Used once to write ``tests/fixtures/pysynthea-population/patients.ndjson.gz`` (one trimmed transaction Bundle a
line); the README there gives the generation commands. A PySynthea chart is 2,000-5,000 resources and about
7 MB (encounters, claims, documents, imaging); the service reads only Patient, Condition, Observation,
MedicationRequest and Procedure. Kept:

* the Patient and its Conditions, the newest of each code and clinical status (PySynthea repeats findings
  such as "Medication review due" at every visit: 100-300 Conditions with 40 distinct codes);
* Observations whose LOINC code is one the service asks for (``observation_loinc_codes``), dated within
  ``KEEP_DAYS`` of the patient's newest such Observation;
* MedicationRequests and Procedures dated within the same span, and Procedures whose code is a lasting
  fact the service reads (dialysis, kidney transplant, valve replacement; ``fhir_mappings/tables``).

Nothing inside a kept resource changes except that references to dropped resources (encounters, claims,
practitioners) are removed, so that no reference dangles. Dates are kept as generated: the population test
moves each patient to its clock (``tests/integration/population.py``).

    .venv/bin/python -m tests.support.synthea_trim OUT.ndjson.gz DIR [DIR ...]
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_mappings.terminology import observation_loinc_codes

KEEP_DAYS = 540
_TABLE = Path(__file__).resolve().parents[2] / "fhir_mappings" / "tables" / "concepts.csv"
_LASTING_PROCEDURE_CONCEPTS = {"dialysis", "kidney_transplant", "mechanical_valve"}


def _lasting_procedure_codes() -> set[str]:
    with _TABLE.open(encoding="utf-8") as handle:
        return {row["code"] for row in csv.DictReader(handle) if row["concept_id"] in _LASTING_PROCEDURE_CONCEPTS}


def _when(resource: dict[str, Any]) -> datetime | None:
    for field in ("effectiveDateTime", "issued", "authoredOn", "performedDateTime"):
        if isinstance(resource.get(field), str):
            return datetime.fromisoformat(resource[field].replace("Z", "+00:00"))
    for field in ("effectivePeriod", "performedPeriod"):
        start = (resource.get(field) or {}).get("start")
        if isinstance(start, str):
            return datetime.fromisoformat(start.replace("Z", "+00:00"))
    return None


def _codes(resource: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in (resource.get("code") or {}).get("coding") or ()}


def _drop_dangling(node: Any, kept: set[str]) -> Any:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference.startswith("urn:uuid:") and reference not in kept:
            return None
        out = {}
        for name, value in node.items():
            cleaned = _drop_dangling(value, kept)
            if cleaned is not None and cleaned != [] and cleaned != {}:
                out[name] = cleaned
        return out
    if isinstance(node, list):
        items = [_drop_dangling(item, kept) for item in node]
        return [item for item in items if item is not None and item != {}]
    return node


def trim(bundle: dict[str, Any]) -> dict[str, Any]:
    wanted = set(observation_loinc_codes())
    lasting = _lasting_procedure_codes()
    entries = bundle.get("entry") or []
    labs = [e for e in entries if e["resource"]["resourceType"] == "Observation" and _codes(e["resource"]) & wanted]
    lab_entries = {id(e) for e in labs}
    dates = [d for d in (_when(e["resource"]) for e in labs) if d is not None]
    since = max(dates) - timedelta(days=KEEP_DAYS) if dates else None

    def recent(resource: dict[str, Any]) -> bool:
        when = _when(resource)
        return since is not None and when is not None and when >= since

    newest_condition: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        resource = entry["resource"]
        if resource["resourceType"] == "Condition":
            status = json.dumps(resource.get("clinicalStatus"), sort_keys=True)
            key = (",".join(sorted(_codes(resource))), status)
            held = newest_condition.get(key)
            if held is None or str(resource.get("onsetDateTime")) >= str(held["resource"].get("onsetDateTime")):
                newest_condition[key] = entry
    conditions = {id(entry) for entry in newest_condition.values()}

    kept = []
    for entry in entries:
        resource = entry["resource"]
        kind = resource["resourceType"]
        if (kind == "Patient" or id(entry) in conditions
                or (kind == "Observation" and id(entry) in lab_entries and recent(resource))
                or (kind == "MedicationRequest" and recent(resource))
                or (kind == "Procedure" and (recent(resource) or _codes(resource) & lasting))):
            kept.append(entry)
    kept_urls = {str(e.get("fullUrl")) for e in kept}
    trimmed = {k: v for k, v in bundle.items() if k != "entry"}
    trimmed["entry"] = [_drop_dangling(e, kept_urls) for e in kept]
    return trimmed


def bundles(folders: Iterable[Path]) -> Iterable[dict[str, Any]]:
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            bundle = json.loads(path.read_text(encoding="utf-8"))
            if any(e["resource"]["resourceType"] == "Patient" for e in bundle.get("entry") or ()):
                yield bundle


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, folders = Path(args[0]), [Path(a) for a in args[1:]]
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        for bundle in bundles(folders):
            handle.write(json.dumps(trim(bundle), ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
