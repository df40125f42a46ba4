"""kill -9 under load loses no acknowledged response's audit record (security brief §3.4 "Durability",
§4.6 target 7): the real service runs as a subprocess, a bounded concurrent client posts patient-view calls,
the process is SIGKILLed mid-load, and every 200 the client received must have its record; the chain must
verify. Bounded by count (≤ 400 requests) and time (≤ 60 s). Both backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.audit.factory import open_audit_log
from tests.audit.conftest import TEST_KEY
from tests.support.service_process import CLI, clean_environment, start_service

pytestmark = pytest.mark.slow

MAX_REQUESTS = 400
KILL_AFTER_RESPONSES = 150
CONCURRENCY = 16
TIME_BUDGET_S = 60.0


def assessment_request(index: int) -> dict[str, Any]:
    patient = f"crash-{index % 7}"
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": patient, "gender": "female", "birthDate": "1961-04-02"},
            "conditions": empty,
            "observations": empty,
            "medications": empty,
        },
    }


async def drive(base_url: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    acknowledged: list[str] = []
    statuses: dict[int, int] = {}
    sent = failed = 0
    deadline = time.monotonic() + TIME_BUDGET_S / 2
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, failed
        while sent < MAX_REQUESTS and time.monotonic() < deadline:
            body = assessment_request(sent)
            sent += 1
            try:
                answer = await client.post("/cds-services/calcinosis-assessment", json=body)
            except httpx.HTTPError:
                failed += 1
                if killed.is_set():
                    return
                continue
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 200:
                acknowledged.append(body["hookInstance"])
            if len(acknowledged) >= KILL_AFTER_RESPONSES and not killed.is_set():
                # Mid-load: the other workers have requests in flight at this moment.
                os.kill(process.pid, signal.SIGKILL)
                killed.set()

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    if not killed.is_set():
        os.kill(process.pid, signal.SIGKILL)
    return {"sent": sent, "acknowledged": acknowledged, "statuses": statuses, "failed": failed,
            "killed_mid_load": killed.is_set()}


def test_kill_9_loses_no_acknowledged_audit_record(audit_dsn: str, tmp_path: Path) -> None:
    started = time.monotonic()
    env = clean_environment(CDS_ENVIRONMENT="development", CDS_AUDIT_DSN=audit_dsn, CDS_AUDIT_KEY=TEST_KEY.decode(),
                            CDS_DATA_DIR=str(tmp_path / "data"))
    service = start_service(env, tmp_path / "service.log")
    try:
        service.wait_healthy()
        figures = asyncio.run(drive(service.base_url, service.process))
    finally:
        if service.process.poll() is None:
            service.process.kill()
        service.process.wait(timeout=10)

    log = open_audit_log(audit_dsn, TEST_KEY)
    log.open()
    try:
        audited = {row["hook_instance"] for row in log.rows(kinds=["call"])}
        verdict = log.verify()
    finally:
        log.close()
    lost = [hook_instance for hook_instance in figures["acknowledged"] if hook_instance not in audited]
    print(f"\ncrash test [{audit_dsn.split(':')[0]}]: sent {figures['sent']}, statuses {figures['statuses']}, "
          f"200s received {len(figures['acknowledged'])}, audited {len(audited)}, lost {len(lost)}, "
          f"failed in flight {figures['failed']}, {time.monotonic() - started:.1f} s")

    assert figures["statuses"].get(200, 0) >= KILL_AFTER_RESPONSES, f"too few 200s: {figures['statuses']}"
    assert figures["killed_mid_load"], "the service was never killed under load"
    assert figures["failed"] >= 1, "the kill did not interrupt any request in flight"
    assert lost == []
    assert verdict.ok, verdict.describe()
    cli = subprocess.run([str(CLI), "audit", "verify"], env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert time.monotonic() - started < TIME_BUDGET_S
