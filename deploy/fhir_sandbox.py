"""Start and stop the ``sekmet-fhir`` sandbox FHIR server on 127.0.0.1 (no Docker needed).

    python deploy/fhir_sandbox.py [--port 8081] [--token T] [--load]   # Ctrl-C stops it

Settings, readiness and stop follow ``shared/engineering/sandbox-fhir-server.md`` §3, §4 and §6: bound to
127.0.0.1, simulator off, inbound traffic log off, its SQLite store in its own directory, bearer tokens.
The server is stopped by its own PID (SIGTERM, then SIGKILL), never by name. The integration tests and
``bench/bench_fallback.py`` use :func:`running_sandbox`; ``make setup-fhir-sandbox`` installs the binary.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

__all__ = ["SANDBOX_ENV", "Sandbox", "SandboxError", "free_port", "running_sandbox", "sandbox_binary"]

SANDBOX_ENV = "CALCINOSIS_FHIR_SANDBOX"
ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class SandboxError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Sandbox:
    base: str
    token: str
    pid: int
    log_file: Path


def sandbox_binary(configured: str | None = None) -> Path:
    """The sekmet executable from ``$CALCINOSIS_FHIR_SANDBOX``; a clear error when it is missing."""
    configured = configured or os.environ.get(SANDBOX_ENV)
    if not configured:
        raise SandboxError(
            f"{SANDBOX_ENV} is not set. Run `make setup-fhir-sandbox`, then set "
            f"{SANDBOX_ENV}=$PWD/.venv-fhir/bin/sekmet (make test does both)."
        )
    binary = Path(configured)
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise SandboxError(f"{SANDBOX_ENV}={configured} is not an executable file (run `make setup-fhir-sandbox`).")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(base: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SandboxError(f"the sandbox FHIR server exited with {process.returncode}:\n{_tail(log_file)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{base}/metadata").status_code == 200:
                    return
            time.sleep(0.2)
    raise SandboxError(f"the sandbox FHIR server was not ready within {READY_TIMEOUT_S:.0f} s:\n{_tail(log_file)}")


@contextlib.contextmanager
def running_sandbox(
    workdir: Path, *, binary: Path | None = None, port: int | None = None, token: str | None = None
) -> Iterator[Sandbox]:
    """A ready sandbox server with bearer auth; stopped on exit whatever happens (also via ``atexit``)."""
    # Absolute: the server runs with its scratch directory as working directory.
    binary = (binary or sandbox_binary()).absolute()
    port = port or free_port()
    token = token or "sandbox-" + secrets.token_urlsafe(16)
    base = f"http://127.0.0.1:{port}/fhir"
    workdir.mkdir(parents=True, exist_ok=True)
    settings_file = workdir / "fhir-settings.yaml"
    settings = {
        "base_url": base,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "server_auth": {"types": ["bearer"], "tokens": [token]},
        "simulator": {"enabled": False},
        "log_inbound": False,
    }
    settings_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    log_file = workdir / "sekmet.log"
    # SEKMET_* variables would override the settings file (sandbox notes §3).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    with log_file.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the operator-configured sandbox binary, no shell
            [str(binary), "serve", "-c", str(settings_file)],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    # atexit covers an interpreter exit that skips the finally below (e.g. a second Ctrl-C).
    atexit.register(_stop, process)
    try:
        _wait_ready(base, process, log_file)
        yield Sandbox(base=base, token=token, pid=process.pid, log_file=log_file)
    finally:
        _stop(process)
        atexit.unregister(_stop)


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=None, help="bearer token (default: a random one, printed)")
    parser.add_argument("--load", action="store_true", help="load every fixture bundle once it is ready")
    parser.add_argument("--binary", default=None, help=f"sekmet executable (default: ${SANDBOX_ENV})")
    args = parser.parse_args(argv)
    try:
        binary = sandbox_binary(args.binary or str(ROOT / ".venv-fhir" / "bin" / "sekmet"))
    except SandboxError as exc:
        print(exc, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fhir-sandbox-") as scratch, running_sandbox(
        Path(scratch), binary=binary, port=args.port, token=args.token
    ) as sandbox:
        if args.load:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from datetime import UTC, datetime

            from load_fixtures import load_files

            # Dates moved to today, so the loaded patients' labs are current (deploy/load_fixtures.py).
            for item in load_files(sandbox.base, as_of=datetime.now(UTC).date(), token=sandbox.token):
                print(f"loaded {item.path.name}: Patient/{', Patient/'.join(item.patient_ids)}")
        print(f"FHIR sandbox at {sandbox.base} (pid {sandbox.pid}); bearer token: {sandbox.token}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
