"""Per-stage timing of one patient-view call, in process (for ``bench_service.py``).

The whole call is one ASGI invocation of the real app (middleware, routing, pipeline, durable SQLite audit on
a temporary file), with no HTTP client in between; each stage is then timed alone on the same input with
the same functions the pipeline calls. "Framework and the rest" is the whole call less the stages: routing,
middleware, Pydantic request/context models, prefetch resolution bookkeeping, thread hops and metrics.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from hooks.app import create_app
from hooks.audit import HookCallRecord
from hooks.audit.codec import call_row
from hooks.audit.factory import build_audit_store
from hooks.audit.sql_store import SqlAuditStore
from hooks.engine.assessment import assess
from hooks.engine.cards import render_cards
from hooks.engine.service import facts_from_resources
from hooks.models import CdsRequest, CdsResponse
from hooks.pages.links import audited_cards, with_links
from hooks.settings import Settings
from hooks.web import _parse_model

__all__ = ["print_stage_table"]

CALLS = 300
BUDGET_S = 20.0


def _median_us(function: Callable[[], object], calls: int = CALLS) -> float:
    samples = []
    deadline = time.perf_counter() + BUDGET_S / 8
    for _ in range(calls):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return 1e6 * statistics.median(samples)


async def _asgi_call(app: Any, body: bytes) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/cds-services/calcinosis-assessment", "raw_path": b"/cds-services/calcinosis-assessment",
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)
    return status


class _Capture:
    """The app's store, keeping the last record it was given (for timing the audit stages alone)."""

    def __init__(self, inner: SqlAuditStore) -> None:
        self.inner = inner
        self.last: HookCallRecord | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_call(self, record: HookCallRecord) -> None:
        self.last = record
        await self.inner.append_call(record)


async def _whole_call(settings: Settings, body: bytes) -> tuple[float, HookCallRecord]:
    store = _Capture(build_audit_store(settings))  # type: ignore[arg-type]
    app = create_app(settings, audit_store=store)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        samples = []
        deadline = time.perf_counter() + BUDGET_S / 2
        for index in range(CALLS + 20):
            unique = body.replace(b"00000000-0000-4000-8000-000000000000", str(uuid.uuid4()).encode())
            started = time.perf_counter()
            status = await _asgi_call(app, unique)
            if status != 200:
                raise SystemExit(f"in-process call answered {status}")
            if index >= 20:
                samples.append(time.perf_counter() - started)
            if time.perf_counter() > deadline:
                break
        # The commit alone, on the same durable store: a copy of the last record, re-keyed.
        assert store.last is not None
        record = store.last
        commit_samples = []
        for _ in range(100):
            copy = call_from(record)
            started = time.perf_counter()
            await store.inner.append_call(copy)
            commit_samples.append(time.perf_counter() - started)
    return 1e6 * statistics.median(samples), record, 1e6 * statistics.median(commit_samples)  # type: ignore[return-value]


def call_from(record: HookCallRecord) -> HookCallRecord:
    from hooks.audit.codec import call_from_document

    copy = call_from_document(call_row(record)["document"])
    copy.record_id = str(uuid.uuid4())
    return copy


def print_stage_table(body: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="calcinosis-stages-") as tmp:
        settings = Settings(environment="test", auth_required=False, public_base_url="http://127.0.0.1:8080",
                            audit_key="bench-audit-key", data_dir=Path(tmp),
                            audit_dsn=f"sqlite:///{Path(tmp) / 'audit.sqlite3'}")
        whole, record, append = asyncio.run(_whole_call(settings, body))  # type: ignore[misc]
        request = _parse_model(body, CdsRequest)
        from fhir_mappings import classify_prefetch_value

        resources = [r for value in (request.prefetch or {}).values() if value is not None
                     for r in classify_prefetch_value(value).resources]
        patient_id = request.context["patientId"]
        now = record.received_at
        facts = facts_from_resources(resources, patient_id=patient_id, now=now)
        assessment = assess(facts)

        def cards() -> list[dict[str, Any]]:
            rendered = CdsResponse(cards=render_cards(assessment, facts, locale="en", seed="bench")).to_json()
            return list(rendered["cards"])

        payload = cards()
        stages = [
            ("request parse and validation (orjson, duplicate-name check, CdsRequest)",
             _median_us(lambda: _parse_model(body, CdsRequest))),
            ("facts building (prefetch classification, PatientFacts, text matching)",
             _median_us(lambda: facts_from_resources(
                 [r for v in (request.prefetch or {}).values() if v is not None
                  for r in classify_prefetch_value(v).resources], patient_id=patient_id, now=now))),
            ("engine (assess)", _median_us(lambda: assess(facts))),
            ("card rendering (cards, CdsResponse, JSON)", _median_us(cards)),
            ("assessment links and audited cards",
             _median_us(lambda: audited_cards(with_links(payload, record, settings, now), settings))),
            ("response JSON (orjson)", _median_us(lambda: orjson.dumps({"cards": payload}))),
            ("audit record encoding (call_row)", _median_us(lambda: call_row(record))),
        ]
        encode = stages[-1][1]
        stages.append(("audit commit (chain, INSERTs, COMMIT with fsync, thread hop)", max(append - encode, 0.0)))
    print(f"\nPer-stage time of one dialysis call, in process (medians over ≤ {CALLS} calls, µs)\n")
    print("| Stage | µs |")
    print("|---|---|")
    for name, micros in stages:
        print(f"| {name} | {micros:,.0f} |")
    rest = whole - sum(m for _, m in stages)
    print(f"| framework, middleware, models, prefetch bookkeeping, thread hops (the rest) | {rest:,.0f} |")
    print(f"| **whole call (one ASGI invocation, durable SQLite audit)** | **{whole:,.0f}** |")
