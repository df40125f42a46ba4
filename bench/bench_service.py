"""Benchmark: the whole HTTP path of a patient-view call, against a floor server measured in the same run.

Starts the service (``calcinosis-cds serve``: one uvicorn worker, the default durable SQLite audit, auth off)
and the floor (``bench/floor_server.py``: uvicorn + orjson answering ``{"cards": []}``) as processes on free
loopback ports, and drives each with wrk (2 threads, 8 connections; a bounded asyncio client without wrk),
alternating floor and service twice per row. Every request has a fresh ``hookInstance``. Rows:

  dialysis    the patient-view prefetch of a dialysis patient (bench/fixtures/dialysis-patient-view.json, 60 resources)
  silent      a CKD patient with normal labs (no cards)
  1,000 obs   a record of 1,000 laboratory Observations
  auth ES384  the dialysis call with a fresh ES384 JWT per request (JWKS served on loopback)
  pg 1 / pg 2 the dialysis call with one, then two service processes sharing one PostgreSQL audit chain

It prints req/s, p50, p99, CPU ms per request and the ratio to the floor (medians of the two runs), the RSS
over 10,000 dialysis calls, then the per-stage table of one call from in-process timing (``service_stages``).
Bounded: ``--seconds`` per run (5 by default) and ``--rss-seconds`` (240) for the RSS row: at most about
8 minutes in all.

    .venv/bin/python bench/bench_service.py [--seconds 5] [--rows dialysis,silent,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import psycopg
import yaml
from fixture_dates import as_of
from service_load import Run, Server, drive, floor_server, have_wrk, rss_mib, service_server, workdir

from tests.fhir_builders import NOW as FIXTURES_WRITTEN_AT

ROOT = Path(__file__).resolve().parents[1]
DIALYSIS = ROOT / "bench" / "fixtures" / "dialysis-patient-view.json"
SILENT = ROOT / "tests" / "fixtures" / "calcinosis" / "silent_ckd3_normal_labs.json"
PG_ADMIN = os.environ.get("CALCINOSIS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
RSS_CALLS = 10_000
RSS_BUDGET_S = 240.0
ES_ISS = "https://ehr.bench"


def _request_for_bundle(bundle: dict[str, Any]) -> bytes:
    from hooks.services.calcinosis import prefetch_templates
    from tests.integration.prefetch_builder import build_prefetch

    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    context = {"userId": "Practitioner/bench", "patientId": patient_id}
    request = {"hookInstance": "00000000-0000-4000-8000-000000000000", "hook": "patient-view", "context": context,
               "prefetch": build_prefetch(bundle, prefetch_templates(), context)}
    return orjson.dumps(request)


def _large_record(observations: int) -> bytes:
    from bench_facts import PATIENT, make_bundle

    request = {
        "hookInstance": "00000000-0000-4000-8000-000000000000", "hook": "patient-view",
        "context": {"userId": "Practitioner/bench", "patientId": "bench"},
        "prefetch": {
            "patient": PATIENT,
            "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                "resourceType": "Condition", "id": "ckd", "subject": {"reference": "Patient/bench"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.6"}]}}}]},
            "observations": orjson.loads(make_bundle(observations)),
            "medications": {"resourceType": "Bundle", "type": "searchset", "entry": []},
            "procedures": {"resourceType": "Bundle", "type": "searchset", "entry": []},
        },
    }
    return orjson.dumps(request)


def _bodies(directory: Path) -> dict[str, Path]:
    from bench_facts import NOW as RECORD_WRITTEN_AT

    today = datetime.now(UTC)
    bodies = {
        "dialysis": as_of(DIALYSIS.read_bytes().strip(), FIXTURES_WRITTEN_AT, today),
        "silent": as_of(_request_for_bundle(json.loads(SILENT.read_text(encoding="utf-8"))), FIXTURES_WRITTEN_AT,
                        today),
        "obs1000": as_of(_large_record(1_000), RECORD_WRITTEN_AT, today),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_bytes(body)
    return paths


def _median_run(runs: Sequence[Run]) -> dict[str, float]:
    return {
        "rate": statistics.median(r.rate for r in runs),
        "p50": statistics.median(r.p50_ms for r in runs),
        "p99": statistics.median(r.p99_ms for r in runs),
        "cpu": statistics.median(r.cpu_ms_per_request for r in runs),
        "failed": sum(r.non_2xx + r.socket_errors for r in runs),
        "requests": sum(r.requests for r in runs),
    }


def _alternate(floor: Server, servers: Sequence[Server], body: Path, seconds: float,
               tokens: Callable[[], Sequence[Path | None]] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Floor, service, floor, service: both see the same moments of a noisy machine."""
    drive(servers, body, 1.0, tokens=tokens() if tokens else None)  # warm-up (caches, JWKS, first connections)
    floor_runs, service_runs = [], []
    for _ in range(2):
        floor_runs.append(drive([floor], body, seconds))
        service_runs.append(drive(servers, body, seconds, tokens=tokens() if tokens else None))
    return _median_run(floor_runs), _median_run(service_runs)


def _pg_dsn() -> tuple[str, Callable[[], None]]:
    name = f"calcinosis_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


class _Tokens:
    """ES384 tokens minted before timing, one per request a run can make (fresh ``jti`` each)."""

    def __init__(self, directory: Path, per_run: int) -> None:
        from tests.support.cds_client import JwksServer, SigningKey

        self.key = SigningKey.es384()
        self.jwks = JwksServer().start()
        self.jwks.publish(self.key, path="/es.json")
        self.directory = directory
        self.per_run = per_run
        self.runs = 0
        self.trust = directory / "trust.yaml"
        self.trust.write_text(yaml.safe_dump({"issuers": [
            {"iss": ES_ISS, "jku": [self.jwks.url("/es.json")], "algorithms": ["ES384"]}]}))

    def files(self, audience: str) -> Sequence[Path | None]:
        from tests.support.cds_client import sandbox_token

        self.runs += 1
        path = self.directory / f"tokens-{self.runs}.txt"
        now = int(time.time())
        path.write_text("\n".join(
            sandbox_token(self.key, iss=ES_ISS, aud=audience, jku=self.jwks.url("/es.json"), now=now)
            for _ in range(self.per_run)) + "\n")
        return [path]

    def stop(self) -> None:
        self.jwks.stop()


def _print_row(name: str, floor: dict[str, float], service: dict[str, float], extra: str = "") -> None:
    ratio = service["rate"] / floor["rate"] if floor["rate"] else 0.0
    print(f"| {name} | {service['rate']:,.0f} | {service['p50']:.1f} | {service['p99']:.1f} | {service['cpu']:.2f} "
          f"| {floor['rate']:,.0f} | {floor['p99']:.2f} | **{ratio:.4f}** | {int(service['failed'])} | {extra} |",
          flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM also stops every server this run started


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rows", default="dialysis,silent,obs1000,auth,pg,rss,stages")
    parser.add_argument("--rss-seconds", type=float, default=RSS_BUDGET_S,
                        help="bound of the RSS row (10,000 dialysis calls or this many seconds)")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    seconds = min(max(args.seconds, 1.0), 30.0)
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"{'wrk -t2 -c8' if have_wrk() else 'asyncio client, 8 connections'}, {seconds:g} s per run, "
          "floor and service alternated twice (medians); fresh hookInstance per request\n")
    print("| Row | req/s | p50 ms | p99 ms | CPU ms/req | floor req/s | floor p99 ms | ratio to floor | "
          "failed | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with workdir() as tmp:
        directory = Path(tmp)
        bodies = _bodies(directory)
        floor = floor_server(directory)
        started: list[Server] = [floor]
        try:
            single = service_server(directory, {}, "sqlite")
            started.append(single)
            calls_before = 0
            for name, label in (("dialysis", "dialysis, SQLite audit"), ("silent", "silent patient"),
                                ("obs1000", "1,000 Observations")):
                if name in rows:
                    floor_stats, service_stats = _alternate(floor, [single], bodies[name], seconds)
                    calls_before += int(service_stats["requests"])
                    size = bodies[name].stat().st_size
                    _print_row(label, floor_stats, service_stats, f"{size / 1024:.1f} KiB body")
            if "rss" in rows:
                _rss(single, bodies["dialysis"], min(args.rss_seconds, 600.0))
            single.stop()
            started.remove(single)
            if "auth" in rows:
                tokens = _Tokens(directory, per_run=int(seconds * 2_000))
                try:
                    env = {"CDS_AUTH_REQUIRED": "true", "CDS_TRUST_FILE": str(tokens.trust)}
                    secured = service_server(directory, env, "auth")
                    started.append(secured)
                    audience = f"http://127.0.0.1:{secured.port}/cds-services/calcinosis-assessment"
                    floor_stats, service_stats = _alternate(floor, [secured], bodies["dialysis"], seconds,
                                                            tokens=lambda: tokens.files(audience))
                    _print_row("dialysis, ES384 JWT", floor_stats, service_stats, "fresh jti per request")
                    secured.stop()
                    started.remove(secured)
                finally:
                    tokens.stop()
            if "pg" in rows:
                _postgres(directory, floor, bodies["dialysis"], seconds, started)
        finally:
            for server in reversed(started):
                server.stop()
    if "stages" in rows:
        from service_stages import print_stage_table

        print_stage_table(as_of(DIALYSIS.read_bytes(), FIXTURES_WRITTEN_AT, datetime.now(UTC)))
    return 0


def _rss(server: Server, body: Path, budget_s: float) -> None:
    """RSS after the warm-up rows, then after 10,000 more dialysis calls (bounded by ``budget_s``)."""
    drive([server], body, 3.0)  # warm (caches, connections) whatever rows ran before
    before = rss_mib(server.pid)
    calls, started = 0, time.monotonic()
    peak = before
    while calls < RSS_CALLS and time.monotonic() - started < budget_s:
        run = drive([server], body, 5.0)
        calls += run.requests
        peak = max(peak, rss_mib(server.pid))
    after = rss_mib(server.pid)
    print(f"\nRSS over {calls:,} dialysis calls: {before:.1f} MiB before, {after:.1f} MiB after "
          f"(peak {peak:.1f}, {after - before:+.1f} MiB)\n", flush=True)


def _postgres(directory: Path, floor: Server, body: Path, seconds: float, started: list[Server]) -> None:
    dsn, drop = _pg_dsn()
    try:
        env = {"CDS_AUDIT_DSN": dsn}
        first = service_server(directory, env, "pg1")
        started.append(first)
        floor_one, one = _alternate(floor, [first], body, seconds)
        _print_row("dialysis, PostgreSQL, 1 worker", floor_one, one)
        second = service_server(directory, env, "pg2")
        started.append(second)
        floor_two, two = _alternate(floor, [first, second], body, seconds)
        scale = two["rate"] / one["rate"] if one["rate"] else 0.0
        _print_row("dialysis, PostgreSQL, 2 workers", floor_two, two, f"{scale:.2f}x one worker")
        for server in (second, first):
            server.stop()
            started.remove(server)
    finally:
        drop()


if __name__ == "__main__":
    sys.exit(main())
