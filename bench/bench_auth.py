"""JWT verification overhead per service call (CDS Hooks 2.0 #trusting-cds-clients; docs/security.md).

Drives a stub service through ``httpx.ASGITransport`` (no sockets for the calls themselves) in four modes:
NoAuth, a sandbox-style ES384 JWT and an Epic-style RS384 JWT (fresh ``jti`` per call, JWKS cached after
the first call; the JWKS is served by a real HTTP server on 127.0.0.1), plus the raw ``jwt.decode`` cost of
each algorithm as a floor. Tokens are minted before timing. Each mode stops after ``--calls`` calls or
``--budget-s`` seconds, whichever comes first. Prints a Markdown table.

    .venv/bin/python bench/bench_auth.py [--calls 1500] [--budget-s 4]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jwt
import yaml

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.settings import Settings
from tests.auth.conftest import NeverFetcher, hook_body, stub_registry
from tests.conftest import running_client
from tests.support.cds_client import JwksServer, SigningKey, bearer, epic_token, sandbox_token

BASE = "http://testserver"
SERVICE_URL = f"{BASE}/cds-services/stub"
ES_ISS, RS_ISS = "https://ehr.bench", "https://epic.bench/api/FHIR/R4"


def _settings(trust_file: Path | None) -> Settings:
    return Settings(
        environment="test",
        auth_required=trust_file is not None,
        trust_file=trust_file,
        public_base_url=BASE,
        audit_key="bench",
        rate_limit_per_minute=10_000_000,
    )


async def _time_calls(settings: Settings, tokens: list[str | None], budget_s: float) -> list[float]:
    app = create_app(settings, registry=stub_registry(), audit_store=MemoryAuditStore(), fetcher=NeverFetcher())
    body = hook_body()
    samples: list[float] = []
    async with running_client(app) as client:
        deadline = time.perf_counter() + budget_s
        for index, token in enumerate(tokens):
            headers = bearer(token) if token else {}
            started = time.perf_counter()
            response = await client.post("/cds-services/stub", json=body, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"benchmark call failed with {response.status_code}: {response.text[:300]}")
            if index >= 20:  # the first calls warm caches and fetch the JWKS
                samples.append(elapsed)
            if time.perf_counter() > deadline:
                break
    return samples


def _time_decode(token: str, key: Any, alg: str, calls: int, budget_s: float) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(calls):
        started = time.perf_counter()
        jwt.decode(token, key, algorithms=[alg], audience=SERVICE_URL)
        samples.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return samples


def _row(name: str, samples: list[float], baseline: float | None) -> str:
    ms = sorted(s * 1000 for s in samples)
    median = statistics.median(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    overhead = f"+{median - baseline:.3f}" if baseline is not None else "—"
    return f"| {name} | {len(ms)} | {median:.3f} | {p90:.3f} | {overhead} |"


async def main(calls: int, budget_s: float) -> None:
    es_key, rs_key = SigningKey.es384(), SigningKey.rs384()
    with JwksServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.publish(es_key, path="/es.json")
        server.publish(rs_key, path="/rs.json")
        trust = Path(tmp) / "trust.yaml"
        trust.write_text(yaml.safe_dump({"issuers": [
            {"iss": ES_ISS, "jku": [server.url("/es.json")], "algorithms": ["ES384"]},
            {"iss": RS_ISS, "jku": [server.url("/rs.json")], "algorithms": ["RS384"]},
        ]}))
        minters: dict[str, Callable[[], str]] = {
            # Issued now: the app judges token times by the real clock here (the tests' tokens use a fixed one).
            "ES384": lambda: sandbox_token(es_key, iss=ES_ISS, aud=SERVICE_URL, jku=server.url("/es.json"),
                                           now=int(time.time())),
            "RS384": lambda: epic_token(rs_key, iss=RS_ISS, aud=SERVICE_URL, jku=server.url("/rs.json"),
                                        now=int(time.time())),
        }
        no_auth = await _time_calls(_settings(None), [None] * calls, budget_s)
        baseline = statistics.median(no_auth) * 1000
        rows = [_row("(a) NoAuth service call", no_auth, None)]
        for label, alg in (("(b) ES384 JWT service call", "ES384"), ("(c) RS384 JWT service call", "RS384")):
            tokens: list[str | None] = [minters[alg]() for _ in range(calls)]
            rows.append(_row(label, await _time_calls(_settings(trust), tokens, budget_s), baseline))
        for alg, key in (("ES384", es_key), ("RS384", rs_key)):
            public = key.private_key.public_key()
            rows.append(_row(f"raw `jwt.decode` {alg} (floor)", _time_decode(minters[alg](), public, alg, calls,
                                                                               budget_s), None))
    print(f"Python {platform.python_version()}, PyJWT {jwt.__version__}, {platform.machine()}, "
          f"calls per mode ≤ {calls}, budget {budget_s} s per mode\n")
    print("| Mode | calls | median ms | p90 ms | median overhead vs NoAuth (ms) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--budget-s", type=float, default=4.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.budget_s))
