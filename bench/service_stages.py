"""Per-stage timing of one patient-view call, in process (for ``bench_service.py``).

The whole call is one ASGI invocation of the real app (middleware, routing, pipeline, durable SQLite audit on
a temporary file), with no HTTP client in between. Each stage is timed twice: inside those calls (the CPU time
of the pipeline's own function, on the thread that ran it) and alone, called again and again on the same
input. The two differ: alone, a stage runs with its code and data hot in the caches; inside a call it follows
the event loop and the audit writer, as in the served process, and costs up to twice as much. "The rest" is
the whole call less the stages as timed inside it: routing, middleware, Pydantic request/context models,
prefetch resolution bookkeeping, thread hops and metrics.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from hooks.engine.snapshot import assessment_snapshot
from hooks.models import CdsRequest, CdsResponse
from hooks.pages.links import audited_cards, with_links
from hooks.settings import Settings
from hooks.web import _parse_model

__all__ = ["print_stage_table"]

CALLS = 300
BUDGET_S = 20.0
WARM_UP_CALLS = 20
# (row, module, the name the pipeline calls there): each is timed inside the whole calls, by CPU time of the
# thread that runs it.
IN_CALL = (
    ("parse", "hooks.web", "_parse_model"),
    ("facts", "hooks.engine.service", "facts_from_resources"),
    ("assess", "hooks.engine.service", "assess"),
    ("cards", "hooks.engine.service", "render_cards"),
    ("snapshot", "hooks.engine.service", "assessment_snapshot"),
    ("links", "hooks.pipeline", "with_links"),
    ("links", "hooks.pipeline", "audited_cards"),
    ("encode", "hooks.audit.sql", "call_row"),
)


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


@contextmanager
def _timed_in_call() -> Iterator[dict[str, list[float]]]:
    """The pipeline's stage functions, wrapped to record their thread CPU time per call, then restored."""
    spent: dict[str, list[float]] = defaultdict(list)
    restore = []
    for row, module_name, name in IN_CALL:
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def timed(*args: Any, _row: str = row, _original: Any = original, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_row].append(time.thread_time() - started)

        setattr(module, name, timed)
        restore.append((module, name, original))
    try:
        yield spent
    finally:
        for module, name, original in restore:
            setattr(module, name, original)


def _per_call_us(samples: list[float], calls: int) -> float:
    """Median per call of the timed calls (a stage run twice per call, as the links are, counts as one)."""
    per_call = len(samples) // max(calls, 1)
    kept = samples[WARM_UP_CALLS * per_call:]
    totals = [sum(kept[i:i + per_call]) for i in range(0, len(kept) - per_call + 1, per_call)]
    return 1e6 * statistics.median(totals) if totals else 0.0


async def _whole_call(settings: Settings, body: bytes, spent: dict[str, list[float]]
                      ) -> tuple[float, HookCallRecord, float, int, dict[str, list[float]]]:
    """(median whole call µs, the last record, median commit alone µs, calls made, the stage times of the calls)."""
    store = _Capture(build_audit_store(settings))  # type: ignore[arg-type]
    app = create_app(settings, audit_store=store)  # type: ignore[arg-type]
    calls = 0
    async with app.router.lifespan_context(app):
        samples = []
        deadline = time.perf_counter() + BUDGET_S / 2
        for index in range(CALLS + WARM_UP_CALLS):
            unique = body.replace(b"00000000-0000-4000-8000-000000000000", str(uuid.uuid4()).encode())
            started = time.perf_counter()
            status = await _asgi_call(app, unique)
            calls += 1
            if status != 200:
                raise SystemExit(f"in-process call answered {status}")
            if index >= WARM_UP_CALLS:
                samples.append(time.perf_counter() - started)
            if time.perf_counter() > deadline:
                break
        in_calls = {row: list(times) for row, times in spent.items()}  # before the commit-alone loop below
        # The commit alone, on the same durable store: a copy of the last record, re-keyed.
        assert store.last is not None
        record = store.last
        commit_samples = []
        for _ in range(100):
            copy = call_from(record)
            started = time.perf_counter()
            await store.inner.append_call(copy)
            commit_samples.append(time.perf_counter() - started)
    return 1e6 * statistics.median(samples), record, 1e6 * statistics.median(commit_samples), calls, in_calls


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
        with _timed_in_call() as spent:
            whole, record, append, calls, in_calls = asyncio.run(_whole_call(settings, body, spent))
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
        alone = {
            "parse": _median_us(lambda: _parse_model(body, CdsRequest)),
            "facts": _median_us(lambda: facts_from_resources(resources, patient_id=patient_id, now=now)),
            "assess": _median_us(lambda: assess(facts)),
            "cards": _median_us(cards),
            "snapshot": _median_us(lambda: assessment_snapshot(assessment, facts)),
            "links": _median_us(lambda: audited_cards(with_links(payload, record, settings, now), settings)),
            "json": _median_us(lambda: orjson.dumps({"cards": payload})),
            "encode": _median_us(lambda: call_row(record)),
        }
    inside = {row: _per_call_us(times, calls) for row, times in in_calls.items()}
    commit = max(append - alone["encode"], 0.0)
    rows = [
        ("request parse and validation (orjson, duplicate-name check, CdsRequest)", "parse"),
        ("facts building (PatientFacts, text matching)", "facts"),
        ("engine (assess)", "assess"),
        ("card rendering (cards; CdsResponse and its JSON alone)", "cards"),
        ("assessment snapshot (kept with the audit record)", "snapshot"),
        ("assessment links and audited cards", "links"),
        ("response JSON (orjson)", "json"),
        ("audit record encoding (call_row)", "encode"),
    ]
    print(f"\nPer-stage time of one dialysis call, in process (medians over ≤ {CALLS} calls, µs): inside the whole "
          "calls (CPU of the thread that ran the stage) and alone (the same function called again and again)\n")
    print("| Stage | in the call | alone |")
    print("|---|---|---|")
    for name, key in rows:
        shown = f"{inside[key]:,.0f}" if key in inside else "—"
        print(f"| {name} | {shown} | {alone[key]:,.0f} |")
    print(f"| audit commit (chain, INSERTs, COMMIT with fsync, thread hop; timed alone) | — | {commit:,.0f} |")
    timed = sum(inside.get(key, alone[key]) for _, key in rows) + commit
    print(f"| framework, middleware, models, prefetch bookkeeping, thread hops (the rest) | {whole - timed:,.0f} | |")
    print(f"| **whole call (one ASGI invocation, durable SQLite audit)** | **{whole:,.0f}** | |")
