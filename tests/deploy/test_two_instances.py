"""Several instances, one audit chain: two real service processes on one PostgreSQL database under
concurrent load (bounded: 240 calls, 16 in flight, 90 s). Every acknowledged response is audited, the chain
is one gap-free line that ``calcinosis-cds audit verify`` accepts, a ``jti`` replayed on the other instance
is refused, and feedback sent to the other instance links to the card it showed."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import yaml

from hooks.audit.factory import open_audit_log
from tests.integration.conftest import loader
from tests.support.cds_client import SigningKey, bearer, sandbox_token
from tests.support.service_process import CLI, ServiceProcess, clean_environment, start_service

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[2]
ISS = "https://ehr.test"
PUBLIC = "https://cds.test"
SERVICE = "/cds-services/calcinosis-assessment"
AUDIT_KEY = "two-instance-test-key"
CALLS, CONCURRENCY, TIME_BUDGET_S = 240, 16, 90.0
# The process reads the wall clock: the example's lab dates are moved to today (same cards any day).
EXAMPLE = loader.shift_dates(
    json.loads((ROOT / "examples" / "patient-view-request.json").read_text(encoding="utf-8")),
    loader.days_since_fixture_date(datetime.now(UTC).date()),
)


@pytest.fixture
def database() -> Iterator[str]:
    name = f"calcinosis_instances_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.es384("ehr-key")


def _token(key: SigningKey, path: str) -> str:
    return sandbox_token(key, iss=ISS, aud=PUBLIC + path, jku=None, now=int(time.time()))


def _body() -> dict[str, Any]:
    return {**EXAMPLE, "hookInstance": str(uuid.uuid4())}


@pytest.fixture
def instances(database: str, key: SigningKey, tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump({"issuers": [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}]}))
    started = []
    for name in ("a", "b"):
        env = clean_environment(
            CDS_ENVIRONMENT="test", CDS_AUDIT_DSN=database, CDS_AUDIT_KEY=AUDIT_KEY, CDS_TRUST_FILE=str(trust),
            CDS_PUBLIC_BASE_URL=PUBLIC, CDS_DATA_DIR=str(tmp_path / name), CDS_RATE_LIMIT_PER_MINUTE="100000",
        )
        started.append(start_service(env, tmp_path / f"{name}.log"))
    try:
        for service in started:
            service.wait_healthy()
        yield started[0], started[1]
    finally:
        for service in started:
            service.stop()


async def _load(instances: tuple[ServiceProcess, ServiceProcess], key: SigningKey) -> list[dict[str, Any]]:
    """CALLS hook calls, CONCURRENCY in flight, alternating between the instances."""
    results: list[dict[str, Any]] = []
    counter = itertools.count()
    deadline = time.monotonic() + TIME_BUDGET_S / 2

    async def worker(clients: list[httpx.AsyncClient]) -> None:
        while (index := next(counter)) < CALLS and time.monotonic() < deadline:
            instance = index % 2
            body = _body()
            answer = await clients[instance].post(SERVICE, json=body, headers=bearer(_token(key, SERVICE)))
            cards = answer.json().get("cards", []) if answer.status_code == 200 else []
            results.append({"instance": instance, "status": answer.status_code, "hookInstance": body["hookInstance"],
                            "cards": [card["uuid"] for card in cards],
                            "refusal": None if answer.status_code == 200 else answer.text[:300]})

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=instances[0].base_url, timeout=20, limits=limits) as first, \
            httpx.AsyncClient(base_url=instances[1].base_url, timeout=20, limits=limits) as second:
        await asyncio.gather(*(worker([first, second]) for _ in range(CONCURRENCY)))
    return results


def test_two_instances_keep_one_gap_free_chain(
    instances: tuple[ServiceProcess, ServiceProcess], key: SigningKey, database: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    first, second = instances
    results = asyncio.run(_load(instances, key))
    load_seconds = time.monotonic() - started

    # A jti spent on one instance is refused by the other: one replay cache in the shared database.
    token = _token(key, SERVICE)
    spent = httpx.post(first.base_url + SERVICE, json=_body(), headers=bearer(token), timeout=10)
    replayed = httpx.post(second.base_url + SERVICE, json=_body(), headers=bearer(token), timeout=10)
    # Feedback on a card instance A showed, sent to instance B, then repeated to A.
    shown = next(r for r in results if r["instance"] == 0 and r["status"] == 200)
    item = {"card": shown["cards"][0], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T09:05:00Z"}
    feedback = httpx.post(second.base_url + SERVICE + "/feedback", json={"feedback": [item]},
                          headers=bearer(_token(key, SERVICE + "/feedback")), timeout=10)
    repeated = httpx.post(first.base_url + SERVICE + "/feedback", json={"feedback": [item]},
                          headers=bearer(_token(key, SERVICE + "/feedback")), timeout=10)
    exit_codes = [first.stop(), second.stop()]  # graceful: each writes its checkpoint

    statuses = [r["status"] for r in results]
    acknowledged = {r["hookInstance"]: r for r in results if r["status"] == 200}
    assert len(results) == CALLS, "the load did not finish within its time budget"
    assert set(statuses) <= {200, 503}, statuses
    assert len(acknowledged) >= CALLS * 0.9, {r["refusal"] for r in results if r["refusal"]}
    assert {r["instance"] for r in acknowledged.values()} == {0, 1}
    assert (spent.status_code, replayed.status_code) == (200, 401)
    assert (feedback.status_code, feedback.json()) == (200, {"stored": 1, "duplicates": 0})
    assert repeated.json() == {"stored": 0, "duplicates": 1}
    assert all(code in {0, -15} for code in exit_codes)

    log = open_audit_log(database, AUDIT_KEY.encode())
    log.open()
    try:
        rows = list(log.rows())
    finally:
        log.close()
    call_rows = [row for row in rows if row["kind"] == "call"]
    calls = {row["hook_instance"]: row for row in call_rows}
    # Every acknowledged response is audited, with the cards that were sent.
    for hook_instance, result in acknowledged.items():
        row = calls[hook_instance]
        assert row["http_status"] == 200
        assert [card["uuid"] for card in orjson.loads(row["document"])["cards"]] == result["cards"]
    # Every answer, 503s and the refused replay included, left exactly one record.
    assert len(call_rows) == len(results) + 2
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1)), "the chain has a gap"
    writers = [acknowledged[row["hook_instance"]]["instance"] for row in rows if row["hook_instance"] in acknowledged]
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    assert switches > 10, "the two instances never interleaved on the chain: no contention was exercised"
    # The refusal is recorded before the body is read: found by its status, attributed to the issuer.
    (replay_row,) = [row for row in call_rows if row["http_status"] == 401]
    replay_document = orjson.loads(replay_row["document"])
    assert replay_document["reason_class"] == "replayed-jti"
    assert (replay_row["iss"], replay_document["kid"]) == (ISS, key.kid)
    (feedback_row,) = [row for row in rows if row["kind"] == "feedback"]
    assert feedback_row["hook_instance"] == shown["hookInstance"]
    assert orjson.loads(feedback_row["document"])["link"] == "linked"
    assert feedback_row["patient_ref"] == "Patient/cc-metastatic"

    checkpoint_files = [tmp_path / name / "audit-checkpoints.jsonl" for name in ("a", "b")]
    assert all(path.is_file() for path in checkpoint_files)
    verify = subprocess.run(
        [str(CLI), "audit", "verify", "--dsn", database,
         *itertools.chain.from_iterable(("--checkpoints", str(path)) for path in checkpoint_files)],
        env=clean_environment(CDS_AUDIT_KEY=AUDIT_KEY, CDS_ENVIRONMENT="test"), cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"chain OK: {len(rows)} records" in verify.stdout
    print(f"\ntwo instances: {len(results)} calls ({statuses.count(200)} x 200, {statuses.count(503)} x 503) "
          f"in {load_seconds:.1f} s, {len(rows)} chained records, {switches} writer switches, "
          f"{time.monotonic() - started:.1f} s in all")
    assert time.monotonic() - started < TIME_BUDGET_S
