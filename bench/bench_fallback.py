"""Hook latency on the FHIR fallback path (security brief §4.2, §4.6; docs/fhir-fallback.md).

    CALCINOSIS_FHIR_SANDBOX=$PWD/.venv-fhir/bin/sekmet .venv/bin/python bench/bench_fallback.py [--calls 50]

1. ``calcinosis-assessment`` with full prefetch versus no prefetch (every key fetched from the sekmet
   sandbox FHIR server with a bearer token): median, p90, p99 over a bounded number of sequential calls.
2. A stalling FHIR stub on 127.0.0.1 whose Observation search does not answer for 10 s: p99 must stay at
   or under the deadline + 200 ms, with the circuit breaker on, and also with it effectively off.

Everything listens on 127.0.0.1 and is stopped by its own handle; the run is bounded in calls and time.
Prints a Markdown table; ``--append FILE`` also appends it (with a heading) to FILE. Exit 1 if a bound fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "deploy")]

import fhir_sandbox  # noqa: E402  (deploy/ scripts, on the path above)
import httpx  # noqa: E402
import load_fixtures  # noqa: E402

from hooks.app import create_app  # noqa: E402
from tests.conftest import FIXED_NOW, running_client  # noqa: E402
from tests.conftest import test_settings as settings_for  # noqa: E402
from tests.integration.prefetch_builder import build_prefetch  # noqa: E402

SERVICE = "calcinosis-assessment"
PATIENT_FILES = (
    "calcinosis/metastatic_ckd4_hyperparathyroidism.json",
    "fhir-data/pysynthea-generated/pysynthea_sle_ckd4_esrd_dialysis_Machelle_Johns.json",
)
STALL_S = 10.0
SLACK_S = 0.2
TIME_LIMIT_S = 240.0


def _percentiles(samples: list[float]) -> tuple[float, float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[89], cuts[98], max(samples)


def _request(patient_id: str, prefetch: dict[str, Any] | None, server: str | None, token: str | None) -> Any:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/bench", "patientId": patient_id},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    if server:
        body["fhirServer"] = server
    if token:
        body["fhirAuthorization"] = {
            "access_token": token, "token_type": "Bearer", "expires_in": 300,
            "scope": "patient/*.read", "subject": "calcinosis-cds", "patient": patient_id,
        }
    return body


async def _measure(
    send: Callable[[], Awaitable[httpx.Response]], calls: int, concurrency: int
) -> tuple[list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            response = await send()
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1

    await asyncio.gather(*(one() for _ in range(calls)))
    return latencies, statuses


class StallingFhir:
    """Minimal HTTP/1.1 FHIR stub: canned answers, except the Observation search, which stalls."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.server: asyncio.base_events.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()
        self.base = ""

    async def __aenter__(self) -> StallingFhir:
        self.server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}/fhir"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Our own shutdown of a stalled handler; ending quietly avoids asyncio 3.11 logging a callback error.
            return
        finally:
            writer.close()
            if task is not None:
                self.handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            kind = path.removeprefix("/fhir/").split("?", 1)[0].split("/", 1)[0]
            if kind == "Observation":
                await asyncio.sleep(STALL_S)
            body = json.dumps(self.answers.get(kind, {"resourceType": "Bundle", "type": "searchset"})).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()


async def run(calls: int, concurrency: int) -> tuple[str, bool]:
    rows: list[str] = []
    ok = True
    deadline_s = settings_for().fhir_deadline_s
    fixtures = ROOT / "tests" / "fixtures"
    files = [fixtures / name for name in PATIENT_FILES if (fixtures / name).is_file()]
    with tempfile.TemporaryDirectory(prefix="bench-fhir-") as scratch, fhir_sandbox.running_sandbox(
        Path(scratch)
    ) as sandbox:
        loaded = load_fixtures.load_files(sandbox.base, files, as_of=FIXED_NOW.date(), token=sandbox.token)
        settings = settings_for(fhir_allowed_bases=[sandbox.base], fhir_allow_loopback_http=True)
        async with running_client(create_app(settings, clock=lambda: FIXED_NOW)) as client:
            templates = next(
                s["prefetch"] for s in (await client.get("/cds-services")).json()["services"] if s["id"] == SERVICE
            )
            url = f"/cds-services/{SERVICE}"
            for item in loaded:
                patient_id = item.patient_ids[0]
                prefetch = build_prefetch(item.bundle, templates, {"patientId": patient_id})
                modes = {
                    "full prefetch": _request(patient_id, prefetch, None, None),
                    "no prefetch (sandbox FHIR fallback)": _request(patient_id, None, sandbox.base, sandbox.token),
                }
                for mode, body in modes.items():
                    await client.post(url, json=body)  # warm-up: connection pool, caches

                    async def send(body: Any = body) -> httpx.Response:
                        return await client.post(url, json=body)

                    latencies, statuses = await _measure(send, calls, 1)
                    rows.append(_row(f"{item.path.stem}: {mode}", latencies, statuses, 1))

        # Stall: Observation never answers within the deadline; with and without a working breaker.
        item = loaded[0]
        patient_id = item.patient_ids[0]
        prefetch = build_prefetch(item.bundle, templates, {"patientId": patient_id})
        answers = {"Patient": prefetch["patient"], "Condition": prefetch["conditions"],
                   "MedicationRequest": prefetch["medications"]}
        for label, failures in (("breaker on (3 failures)", 3), ("breaker off", 1_000_000)):
            async with StallingFhir(answers) as stub:
                settings = settings_for(
                    fhir_allowed_bases=[stub.base], fhir_allow_loopback_http=True, fhir_breaker_failures=failures
                )
                async with running_client(create_app(settings, clock=lambda: FIXED_NOW)) as client:
                    body = _request(patient_id, None, stub.base, None)

                    async def send_stalled(body: Any = body) -> httpx.Response:
                        return await client.post(url, json=body)

                    latencies, statuses = await _measure(send_stalled, calls, concurrency)
            rows.append(_row(f"Observation stalls {STALL_S:.0f} s, {label}", latencies, statuses, concurrency))
            p99 = _percentiles(latencies)[2]
            if p99 > deadline_s + SLACK_S:
                ok = False
                rows.append(f"| **FAIL**: p99 {p99 * 1000:.0f} ms > deadline + {SLACK_S * 1000:.0f} ms | | | | | | |")
    header = (
        f"Service `{SERVICE}` in-process (httpx.ASGITransport), sekmet-fhir 0.1.1 sandbox on loopback, "
        f"{calls} calls per row after one warm-up, deadline {deadline_s} s, request timeout "
        f"{settings_for().fhir_request_timeout_s} s; Python {platform.python_version()}, {platform.machine()}.\n\n"
        "| scenario | concurrency | median ms | p90 ms | p99 ms | max ms | statuses |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(rows) + "\n", ok


def _row(label: str, latencies: list[float], statuses: Counter[int], concurrency: int) -> str:
    median, p90, p99, worst = (value * 1000 for value in _percentiles(latencies))
    counts = ", ".join(f"{count}×{status}" for status, count in sorted(statuses.items()))
    return f"| {label} | {concurrency} | {median:.1f} | {p90:.1f} | {p99:.1f} | {worst:.1f} | {counts} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, choices=range(10, 501), metavar="10..500")
    parser.add_argument("--concurrency", type=int, default=6, choices=range(1, 33), metavar="1..32")
    parser.add_argument("--append", type=Path, help="append the table under a heading to this Markdown file")
    args = parser.parse_args()
    try:
        table, ok = asyncio.run(asyncio.wait_for(run(args.calls, args.concurrency), TIME_LIMIT_S))
    except fhir_sandbox.SandboxError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(table)
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            if out.tell() == 0:
                out.write("# Benchmarks\n")
            out.write(f"\n## FHIR fallback latency (bench/bench_fallback.py)\n\n{table}")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
