"""Load generation for ``bench_service.py``: servers started as processes on free loopback ports, driven by wrk.

Every server listens on 127.0.0.1 and is stopped by its own PID. wrk (Debian's ``wrk``) posts the same body
with a fresh ``hookInstance`` per request (a Lua script rewrites the placeholder), and, for the auth row, a
pre-minted JWT per request (fresh ``jti``). Without wrk a bounded asyncio client does the same job.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PLACEHOLDER = b"00000000-0000-4000-8000-000000000000"
START_TIMEOUT_S = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")

_LUA = r"""
local counter = 0
threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  local f = io.open(args[1], "rb"); local body = f:read("*a"); f:close()
  local s, e = body:find("00000000%-0000%-4000%-8000%-000000000000")
  prefix = body:sub(1, s - 1); suffix = body:sub(e + 1)
  tokens = {}
  if args[2] ~= nil and args[2] ~= "" then for line in io.lines(args[2]) do tokens[#tokens + 1] = line end end
  stride = tonumber(args[3] or "1")
end
function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then
    local index = ((counter - 1) * stride + tid) % #tokens + 1
    headers["Authorization"] = "Bearer " .. tokens[index]
  end
  local instance = string.format("%08x-0000-4000-8000-%012x", tid + 4096 * math.random(1, 65535), counter)
  return wrk.format("POST", nil, headers, prefix .. instance .. suffix)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server process on a free loopback port; ``stop`` ends it by its own PID."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], port: int, log: Path) -> None:
        self.port = port
        self._log = log.open("wb")
        self.process = subprocess.Popen(list(argv), env={**os.environ, **env}, cwd=ROOT,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, path: str = "/") -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server on port {self.port} exited with {self.process.returncode}; "
                                 f"see {self._log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"server on port {self.port} did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


def floor_server(workdir: Path) -> Server:
    port = free_port()
    server = Server([sys.executable, str(ROOT / "bench" / "floor_server.py"), str(port)], {}, port,
                    workdir / "floor.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def service_server(workdir: Path, env: Mapping[str, str], name: str) -> Server:
    port = free_port()
    values = {
        "CDS_ENVIRONMENT": "test",
        "CDS_AUTH_REQUIRED": "false",
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_AUDIT_KEY": "bench-audit-key",
        "CDS_DATA_DIR": str(workdir / f"data-{name}"),
        "CDS_RATE_LIMIT_PER_MINUTE": "100000000",
        "CDS_LOG_LEVEL": "WARNING",
    }
    values.update(env)
    values = {key: value.replace("{port}", str(port)) for key, value in values.items()}
    server = Server([str(VENV_BIN / "calcinosis-cds"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    values, port, workdir / f"service-{name}.log")
    try:
        server.wait_ready()
    except BaseException:  # interrupted or failed start: never leave the process behind
        server.stop()
        raise
    return server


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests if self.requests else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _wrk(port: int, body: Path, tokens: Path | None, seconds: float, threads: int, connections: int,
         stride: int) -> subprocess.Popen[bytes]:
    script = body.with_suffix(".lua")
    if not script.exists():
        script.write_text(_LUA)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script),
            f"http://127.0.0.1:{port}/cds-services/calcinosis-assessment", "--", str(body),
            str(tokens or ""), str(stride)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=body.parent)


def _parse(output: bytes) -> tuple[int, float, float, float, int, int]:
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            requests, duration_us, p50_us, p99_us, status, errors = (int(v) for v in line.split()[1:])
            return requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000, status, errors
    raise SystemExit(f"wrk printed no result:\n{output.decode(errors='replace')}")


def drive(servers: Sequence[Server], body: Path, seconds: float, *, connections: int = 8,
          tokens: Sequence[Path | None] | None = None) -> Run:
    """Load every server at once (connections split evenly) for ``seconds``; CPU is summed over the servers."""
    cpu_before = [cpu_seconds(s.pid) for s in servers]
    if have_wrk():
        share = max(1, connections // len(servers))
        threads = 2 if len(servers) == 1 else 1
        runs = [_wrk(s.port, body, (tokens or [None] * len(servers))[i], seconds, threads, share, threads)
                for i, s in enumerate(servers)]
        results = [_parse(run.communicate(timeout=seconds + 30)[0]) for run in runs]
    else:
        results = [asyncio.run(_client(s.port, body.read_bytes(), seconds, max(1, connections // len(servers))))
                   for s in servers]
    cpu = sum(cpu_seconds(s.pid) - before for s, before in zip(servers, cpu_before, strict=True))
    return Run(
        requests=sum(r[0] for r in results),
        seconds=max(r[1] for r in results),
        p50_ms=max(r[2] for r in results),
        p99_ms=max(r[3] for r in results),
        non_2xx=sum(r[4] for r in results),
        socket_errors=sum(r[5] for r in results),
        cpu_s=cpu,
    )


async def _client(port: int, body: bytes, seconds: float, connections: int) -> tuple[int, float, float, float,
                                                                                    int, int]:
    """Fallback without wrk: ``connections`` keep-alive HTTP/1.1 loops, bounded by ``seconds``."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 0
        try:
            while time.perf_counter() < deadline:
                count += 1
                instance = f"{worker:08x}-0000-4000-8000-{count:012x}".encode()
                payload = body.replace(PLACEHOLDER, instance)
                head = (f"POST /cds-services/calcinosis-assessment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
                started = time.perf_counter()
                writer.write(head + payload)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if b" 200 " not in status_line:
                    failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]
    return (len(latencies), elapsed, 1000 * ordered[len(ordered) // 2], 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            failures, 0)


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="calcinosis-bench-")
