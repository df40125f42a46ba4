"""Benchmark: the order-select / order-sign service per call, against a floor measured in the same run (issue 15).

Drives the real app (real registry, in-memory audit store, no FHIR server: everything is prefetched) through
``httpx.ASGITransport`` with a normal prefetch: a dialysis patient with calciphylaxis (the calcinosis fixture
``calciphylaxis_dialysis_warfarin.json``) plus 90 chemistry results over two years and 8 medication orders.

  (a) order-sign with a draft no check is about (amoxicillin): pipeline, validation and audit only (the floor);
  (b) order-sign with a calcium carbonate draft: facts built once, assessment, checks, a card with a swap;
  (c) order-select of the same draft among three drafts;
  (d) patient-view on the same prefetch, for comparison.

Prints medians, p90 and p99 in ms and the ratio to (a). Target (issue 15): p99 of (b) and (c) within 100 ms;
the figure is printed, never asserted (the machine is shared). Bounded: about 60 s. Run:
``.venv/bin/python bench/bench_orders.py [--calls 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.settings import Settings
from tests.conftest import running_client
from tests.fhir_builders import lab, medication, prefetch_for

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "calcinosis"
FIXTURE = FIXTURES / "calciphylaxis_dialysis_warfarin.json"
BUDGET_S = 14.0  # per mode


def _record() -> tuple[str, list[dict[str, Any]]]:
    bundle = json.loads(FIXTURE.read_text(encoding="utf-8"))
    resources = [e["resource"] for e in bundle["entry"]]
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    for index in range(30):  # calcium, phosphate, albumin every ~3 weeks for two years
        days = 10 + index * 24
        resources += [lab("17861-6", 9.2, "mg/dL", pid=pid, days_ago=days, now=NOW),
                      lab("2777-1", 5.1, "mg/dL", pid=pid, days_ago=days, now=NOW),
                      lab("1751-7", 3.6, "g/dL", pid=pid, days_ago=days, now=NOW)]
    for code in ("V03AE02", "H05BX01", "C07AB07", "A11CC05", "B01AB05", "N02BE01", "A02BC01", "C09AA05"):
        resources.append(medication(code, pid=pid, days_ago=60, now=NOW))
    return pid, resources


def _draft(pid: str, rid: str, code: str, system: str = "http://www.whocc.no/atc") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}}


def _bodies(pid: str, resources: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    prefetch = prefetch_for(resources)
    prefetch["procedures"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    amoxicillin = _draft(pid, "amox", "617993", "http://www.nlm.nih.gov/research/umls/rxnorm")
    calcium = _draft(pid, "caco3", "A12AA04")
    paracetamol = _draft(pid, "para", "N02BE01")

    def body(hook: str, **context: Any) -> dict[str, Any]:
        return {"hook": hook, "hookInstance": "", "prefetch": copy.deepcopy(prefetch),
                "context": {"userId": "Practitioner/bench", "patientId": pid, **context}}

    def bundle(*orders: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}

    safety = "/cds-services/calcinosis-medication-safety"
    return {
        "(a) order-sign, no check applies (floor)": (safety, body("order-sign", draftOrders=bundle(amoxicillin))),
        "(b) order-sign, calcium carbonate (card)": (safety, body("order-sign", draftOrders=bundle(calcium))),
        "(c) order-select, 1 of 3 drafts (card)": (safety, body(
            "order-select", draftOrders=bundle(amoxicillin, calcium, paracetamol),
            selections=["MedicationRequest/caco3"])),
        "(d) patient-view, same prefetch": ("/cds-services/calcinosis-assessment", body("patient-view")),
    }


async def _time(client: Any, url: str, body: dict[str, Any], calls: int) -> tuple[list[float], int]:
    samples: list[float] = []
    cards = 0
    deadline = time.perf_counter() + BUDGET_S
    for index in range(calls + 10):
        body["hookInstance"] = str(uuid.uuid4())
        started = time.perf_counter()
        response = await client.post(url, json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
        cards = len(response.json()["cards"])
        if index >= 10:  # warm-up: the text pipeline's per-text cache, first imports
            samples.append(elapsed * 1000)
        if time.perf_counter() > deadline:
            break
    return samples, cards


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(calls: int) -> None:
    settings = Settings(environment="test", auth_required=False, public_base_url="https://bench", audit_key="bench",
                        audit_dsn="memory://", rate_limit_per_minute=10_000_000)
    app = create_app(settings, audit_store=MemoryAuditStore(), clock=lambda: NOW)
    pid, resources = _record()
    rows = []
    floor: float | None = None
    async with running_client(app) as client:
        for label, (url, body) in _bodies(pid, resources).items():
            samples, cards = await _time(client, url, body, calls)
            median = statistics.median(samples)
            floor = floor or median
            p99 = _quantile(samples, 0.99)
            rows.append(f"| {label} | {len(samples)} | {cards} | {median:.2f} | {_quantile(samples, 0.9):.2f} | "
                        f"{p99:.2f} | {median / floor:.2f} | {'yes' if p99 <= 100 else 'NO'} |")
    print(f"Order hooks, one call at a time; {len(resources)} prefetched resources ({sys.platform}).\n")
    print("| mode | calls | cards | median ms | p90 ms | p99 ms | median / (a) | p99 <= 100 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    asyncio.run(main(parser.parse_args().calls))
