"""A real FHIR R4 server for the integration tests: ``sekmet-fhir`` 0.1.1 on 127.0.0.1 with bearer auth.

Starting, readiness and stop are ``deploy/fhir_sandbox.py`` (sandbox notes §3, §4, §6: loopback bind,
simulator off, inbound log off, its own data dir, stopped by PID); loading is ``deploy/load_fixtures.py``:
the same code users run against their own server. ``make test`` installs the server and exports
``CALCINOSIS_FHIR_SANDBOX``; without it these tests FAIL with a clear message (CI must never skip them).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import FIXED_NOW

ROOT = Path(__file__).resolve().parents[2]


def _import_deploy(module: str) -> ModuleType:
    # deploy/ holds scripts, not a package (deploy never imports tests); tests load them by path.
    name = f"calcinosis_deploy_{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / f"{module}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"deploy/{module}.py not found")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


loader = _import_deploy("load_fixtures")
sandbox_runner = _import_deploy("fhir_sandbox")


@dataclass(frozen=True)
class FhirSandbox:
    base: str
    token: str
    pid: int
    loaded: tuple[Any, ...]  # deploy/load_fixtures.LoadedBundle

    def bundle_for(self, path: Path) -> Any:
        return next(item for item in self.loaded if item.path == path)


@pytest.fixture(scope="session")
def fhir_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirSandbox]:
    try:
        binary = sandbox_runner.sandbox_binary()
    except sandbox_runner.SandboxError as exc:
        pytest.fail(f"{exc}\nThen: .venv/bin/pytest tests/integration", pytrace=False)
    files = loader.default_fixture_files()
    if not files:
        pytest.fail("no fixture bundles under tests/fixtures/fhir-data or tests/fixtures/calcinosis", pytrace=False)
    try:
        with sandbox_runner.running_sandbox(tmp_path_factory.mktemp("fhir-sandbox"), binary=binary) as sandbox:
            # Loaded as of the tests' clock: the dates stay as the fixtures write them.
            loaded = loader.load_files(sandbox.base, files, as_of=FIXED_NOW.date(), token=sandbox.token)
            yield FhirSandbox(base=sandbox.base, token=sandbox.token, pid=sandbox.pid, loaded=tuple(loaded))
    except sandbox_runner.SandboxError as exc:
        pytest.fail(str(exc), pytrace=False)
