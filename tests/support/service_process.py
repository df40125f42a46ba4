"""The real service as a subprocess on 127.0.0.1 (a free port), for tests that need a process of its own:
crash, several instances, the image contract, start-up refusals. Stopped by its own PID, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["CLI", "ServiceProcess", "clean_environment", "free_port", "running_service", "start_service"]

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "calcinosis-cds"
# Start-up is dominated by spaCy building the French tokenizer's exception regexes for edsnlp: about 6 s on
# a quiet 2-core machine, 25 s when every core is busy. The wait is generous so a loaded CI machine is not
# mistaken for a service that cannot start; a service that exits is still reported at once.
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any CDS_* setting (the developer's shell must not leak in)."""
    return {**{name: value for name, value in os.environ.items() if not name.startswith("CDS_")}, **extra}


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited ({self.process.returncode}) at start:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"the service did not answer /healthz within {timeout_s:g} s:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM (graceful: the store checkpoints and closes), then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return int(self.process.returncode)


def start_service(
    env: Mapping[str, str],
    log_file: Path,
    *,
    port: int | None = None,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
) -> ServiceProcess:
    """Start ``calcinosis-cds serve`` (or ``command`` + host/port) with exactly ``env``; output to ``log_file``."""
    port = port or free_port()
    argv = [*(command or [str(CLI), "serve"]), "--host", "127.0.0.1", "--port", str(port)]
    with log_file.open("wb") as output:
        process = subprocess.Popen(argv, env=dict(env), stdout=output, stderr=subprocess.STDOUT,
                                   cwd=cwd or log_file.parent, user=user, group=user,
                                   extra_groups=[] if user is not None else None)
    return ServiceProcess(process, f"http://127.0.0.1:{port}", log_file)


@contextmanager
def running_service(env: Mapping[str, str], log_file: Path, **kwargs: object) -> Iterator[ServiceProcess]:
    service = start_service(env, log_file, **kwargs)  # type: ignore[arg-type]
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()
