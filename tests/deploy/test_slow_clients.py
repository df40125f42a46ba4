"""Slow and greedy clients cannot deny service through the deployed front door (issue 16 item 4).

One client address (127.0.0.2) opens 300 connections: 100 idle, 100 sending their request head a byte at a
time, 100 with complete heads and bodies trickling in. Meanwhile calls from another address (127.0.0.1) must
all succeed, each within 1 s. Then: the proxy refused the greedy client's requests beyond its limit with an
OperationOutcome (429), and closed the idle and slow connections after its header timeout. Bounded: the
attack lasts at most ATTACK_S, the whole test TIME_BUDGET_S once the deployment has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.deploy.proxy import Deployment, deployed
from tests.support.service_process import START_TIMEOUT_S

ATTACKER = "127.0.0.2"
PER_KIND = 100
PER_CLIENT_LIMIT = 16
LEGITIMATE_CALLS = 30
ATTACK_S = 8.0
TIME_BUDGET_S = 60.0
SERVICE = "/cds-services/calcinosis-assessment"


def hook_call() -> dict[str, Any]:
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/u1", "patientId": "p1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "gender": "female",
                                 "birthDate": "1961-04-02"},
                     "conditions": empty, "observations": empty, "medications": empty},
    }


class Attack:
    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = asyncio.Event()
        self.answers: list[bytes] = []
        self.closed_by_server = 0
        self.opened = 0
        self.started = time.monotonic()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(ATTACKER, 0))
        self.opened += 1
        return reader, writer

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """Until the server answers or closes: what it said is kept."""
        try:
            data = await reader.read(4096)
        except ConnectionError:
            data = b""
        if data:
            self.answers.append(data)
        self.closed_by_server += 1

    async def idle(self) -> None:
        reader, writer = await self._open()
        try:
            await asyncio.wait({asyncio.ensure_future(self._watch(reader)),
                                asyncio.ensure_future(self.stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.close()

    async def slow_head(self) -> None:
        reader, writer = await self._open()
        watcher = asyncio.ensure_future(self._watch(reader))
        head = f"POST {SERVICE} HTTP/1.1\r\nHost: cds\r\nContent-Type: application/json\r\nX-Slow: ".encode()
        try:
            for byte in head + b"a" * 1000:
                if watcher.done() or self.stop.is_set():
                    break
                writer.write(bytes([byte]))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), 0.1)
            watcher.cancel()
            writer.close()

    async def slow_body(self) -> None:
        reader, writer = await self._open()
        watcher = asyncio.ensure_future(self._watch(reader))
        writer.write(f"POST {SERVICE} HTTP/1.1\r\nHost: cds\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n{".encode())
        try:
            while not watcher.done() and not self.stop.is_set():
                writer.write(b" ")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), 0.1)
            watcher.cancel()
            writer.close()


async def run_attack(deployment: Deployment) -> dict[str, Any]:
    port = int(deployment.url.rsplit(":", 1)[1])
    attack = Attack(port)
    tasks = [asyncio.ensure_future(kind()) for kind in (attack.idle, attack.slow_head, attack.slow_body)
             for _ in range(PER_KIND)]
    for _ in range(100):
        if attack.opened >= 3 * PER_KIND:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # every slow body has sent its head by now

    durations: list[float] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=deployment.url, timeout=5) as client:
        for index in range(LEGITIMATE_CALLS):
            started = time.monotonic()
            if index % 3 == 2:
                answers = await asyncio.gather(*(client.post(SERVICE, json=hook_call()) for _ in range(5)))
            else:
                answers = [await client.post(SERVICE, json=hook_call())]
            durations.append(time.monotonic() - started)
            statuses.extend(a.status_code for a in answers)
            await asyncio.sleep(0.1)

    # Past the proxy's 5 s header timeout: the idle and slow-head connections must have been closed by it.
    remaining = ATTACK_S - (time.monotonic() - attack.started)
    await asyncio.sleep(max(0.0, remaining))
    closed_before_stop = attack.closed_by_server
    attack.stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    return {"opened": attack.opened, "durations": durations, "statuses": statuses,
            "answers": attack.answers, "closed_before_stop": closed_before_stop}


@pytest.mark.slow
@pytest.mark.timeout(int(TIME_BUDGET_S + START_TIMEOUT_S))
def test_300_slow_connections_from_one_client_do_not_deny_service(tmp_path: Path) -> None:
    with deployed(tmp_path, max_conn_per_client=PER_CLIENT_LIMIT) as deployment:
        figures = asyncio.run(run_attack(deployment))
        ready = httpx.get(f"{deployment.url}/readyz", timeout=2)
    durations = sorted(figures["durations"])
    refusals = [answer for answer in figures["answers"] if answer.startswith(b"HTTP/1.1 429")]
    print(f"\nslow clients: {figures['opened']} attacker connections; legitimate calls {len(figures['statuses'])}, "
          f"statuses {sorted(set(figures['statuses']))}, median {durations[len(durations) // 2] * 1000:.0f} ms, "
          f"max {durations[-1] * 1000:.0f} ms; attacker got {len(refusals)} x 429; "
          f"closed by the proxy {figures['closed_before_stop']}")

    assert figures["opened"] == 3 * PER_KIND
    assert set(figures["statuses"]) == {200}
    assert durations[-1] < 1.0
    # The greedy client's complete requests beyond its limit were refused at once, with an OperationOutcome.
    assert len(refusals) >= PER_KIND - PER_CLIENT_LIMIT
    body = orjson.loads(refusals[0].split(b"\r\n\r\n", 1)[1])
    assert body["resourceType"] == "OperationOutcome"
    assert b"retry-after: 1" in refusals[0].lower()
    # Idle and slow-head connections were closed by the proxy's header timeout, not left open.
    assert figures["closed_before_stop"] >= 2 * PER_KIND
    assert ready.status_code == 200
