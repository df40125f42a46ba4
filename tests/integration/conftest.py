"""A real FHIR R4 server for the integration tests: ``sekmet-fhir`` 0.1.1 on 127.0.0.1 with bearer auth.

Settings, readiness and stop follow ``shared/engineering/sandbox-fhir-server.md`` §3, §4 and §6 (loopback
bind, simulator off, inbound log off, its own data dir). ``make test`` installs it and exports
``CALCINOSIS_FHIR_SANDBOX``; without it these tests FAIL (CI must never skip them silently).
The fixtures are loaded by ``deploy/load_fixtures.py``, the same code users run against their own server.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml

SANDBOX_ENV = "CALCINOSIS_FHIR_SANDBOX"
ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def _import_loader() -> ModuleType:
    # deploy/ is not a package on purpose (it ships scripts, not library code); tests import it by path.
    name = "calcinosis_deploy_load_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "load_fixtures.py")
    if spec is None or spec.loader is None:
        raise ImportError("deploy/load_fixtures.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


loader = _import_loader()


@dataclass(frozen=True)
class FhirSandbox:
    base: str
    token: str
    pid: int
    loaded: tuple[object, ...]  # deploy/load_fixtures.LoadedBundle

    def bundle_for(self, path: Path) -> object:
        for item in self.loaded:
            if item.path == path:  # type: ignore[attr-defined]
                return item
        raise KeyError(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server by its own PID (never by name): SIGTERM, then SIGKILL if it lingers."""
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
                pytest.fail(f"the sandbox FHIR server exited with {process.returncode}:\n{_tail(log_file)}")
            try:
                if client.get(f"{base}/metadata").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    pytest.fail(f"the sandbox FHIR server was not ready within {READY_TIMEOUT_S:.0f} s:\n{_tail(log_file)}")


def sandbox_binary() -> Path:
    configured = os.environ.get(SANDBOX_ENV)
    if not configured:
        pytest.fail(
            f"{SANDBOX_ENV} is not set. The integration tests need the sekmet-fhir sandbox: run "
            f"`make test`, or `make setup-fhir-sandbox` then "
            f"`{SANDBOX_ENV}=$PWD/.venv-fhir/bin/sekmet .venv/bin/pytest tests/integration`."
        )
    binary = Path(configured)
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"{SANDBOX_ENV}={configured} is not an executable file (run `make setup-fhir-sandbox`).")
    return binary


@pytest.fixture(scope="session")
def fhir_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirSandbox]:
    binary = sandbox_binary()
    workdir = tmp_path_factory.mktemp("fhir-sandbox")
    port = _free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    token = "sandbox-" + secrets.token_urlsafe(16)
    settings_file = workdir / "fhir-settings.yaml"
    settings_file.write_text(
        yaml.safe_dump(
            {
                "base_url": base,
                "host": "127.0.0.1",
                "port": port,
                "data_dir": str(workdir / "data"),
                "server_auth": {"types": ["bearer"], "tokens": [token]},
                "simulator": {"enabled": False},
                "log_inbound": False,
            }
        ),
        encoding="utf-8",
    )
    log_file = workdir / "sekmet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve", "-c", str(settings_file)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    # atexit covers an interpreter exit that skips the finally below (e.g. a second Ctrl-C).
    atexit.register(_stop, process)
    try:
        _wait_ready(base, process, log_file)
        files = loader.default_fixture_files()
        if not files:
            pytest.fail("no fixture bundles under tests/fixtures/fhir-data or tests/fixtures/calcinosis")
        loaded = loader.load_files(base, files, token=token)
        yield FhirSandbox(base=base, token=token, pid=process.pid, loaded=tuple(loaded))
    finally:
        _stop(process)
        atexit.unregister(_stop)
