"""The image contract, without a Docker engine: build what deploy/Dockerfile builds, then start it as the
image would, with exactly the environment .env.example + compose.yaml give, and use it.

Build stage: the files the Dockerfile COPYs (minus what its .dockerignore drops) go to a scratch ``/src``;
its own ``uv sync --frozen --no-dev --no-install-project`` and ``--no-editable`` run there with the stage's
ENV, into a fresh ``/opt/venv`` outside the source tree; the wheel is built too and its content checked.
Runtime stage: the source tree is deleted; the service runs as the Dockerfile's numeric USER (a real
non-root uid: these machines run tests as root, which can drop to it), from a read-only WORKDIR and HOME,
with the data under a scratch ``/data`` owned by that user, the config directory read-only, the image's
ENTRYPOINT + CMD and its ENV. Container paths (``/data``, ``/config``, ``/app``, ``/opt/venv``) are mapped
onto the scratch root. Two deviations, both forced by the machine: the interpreter is the system Python
3.11 (the image's is python:3.11-slim's), and the server listens on 127.0.0.1 and a free port instead of
0.0.0.0:8080 (every server here binds loopback; ``CDS_PUBLIC_BASE_URL`` stays as configured: the JWT
``aud`` is checked against it, never against the address).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.container import DEPLOY, ROOT, Dockerfile, Stage, compose, container_environment, read_env_file
from tests.integration.conftest import loader
from tests.support.cds_client import SigningKey, bearer, sandbox_token
from tests.support.service_process import ServiceProcess, free_port, start_service

pytestmark = pytest.mark.slow

UV = ROOT / ".uvtool" / "bin" / "uv"
# Readable by a non-root user (the project's interpreter is under /root); the Makefile installs and names it.
SYSTEM_PYTHON = os.environ.get("CALCINOSIS_SYSTEM_PYTHON", "/usr/bin/python3.11")
DOCKERFILE = Dockerfile(DEPLOY / "Dockerfile")
# The example's lab dates are relative to FIXTURE_DATE; the process reads the wall clock, so they are moved
# to today first (as deploy/load_fixtures.py does for a sandbox): the same cards whatever the date.
EXAMPLE = loader.shift_dates(
    json.loads((ROOT / "examples" / "patient-view-request.json").read_text(encoding="utf-8")),
    loader.days_since_fixture_date(datetime.now(UTC).date()),
)
SANDBOX_KEY = json.loads((ROOT / "tests/fixtures/cds-hooks/sandbox-jwk-private-PUBLISHED.json").read_text())["keys"][0]
SERVICE = "/cds-services/calcinosis-assessment"
# The one value a user fills into .env before the first start (.env.example "REQUIRED").
AUDIT_KEY = "contract-test-audit-key-not-secret"


@dataclass
class Image:
    root: Path  # plays "/" for the container paths
    uid: int
    gid: int
    wheel_files: list[str]
    build_seconds: float

    def host(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def to_host(self, value: str) -> str:
        """Container paths in a value (``/data``, ``sqlite:////data/x``, ``/opt/venv/bin:...``) onto the root."""
        return re.sub(r"(?<![\w.])(/(?:data|config|app|opt/venv))(?=/|:|$)",
                      lambda m: str(self.host(m.group(1))), value)


def _pattern(text: str) -> tuple[re.Pattern[str], bool]:
    negate = text.startswith("!")
    body = re.escape(text.removeprefix("!")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(body), negate


def _ignored(relative: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: the last matching pattern wins, ``!`` re-includes; a matched directory covers its files."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern, negate in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _copy_into(stage: Stage, workdir: Path) -> None:
    """The stage's ``COPY src... dest`` from the build context (the repository), honouring .dockerignore."""
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [_pattern(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    for argument in stage.all("COPY"):
        *sources, destination = argument.split()
        for source in sources:
            origin = ROOT / source
            files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            for path in files:
                if _ignored(path.relative_to(ROOT).as_posix(), patterns):
                    continue
                if origin.is_file():  # COPY a b c ./ puts each file into the directory
                    inside = workdir / destination / path.name
                else:  # COPY dir ./dir copies the directory's content
                    inside = workdir / destination / path.relative_to(origin)
                inside.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, inside)


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    started = time.monotonic()
    assert Path(SYSTEM_PYTHON).is_file(), f"{SYSTEM_PYTHON} is missing: `make test` installs it (setup-system-python)"
    # Not under pytest's tmp dir: that is owner-only, and the container user must reach this tree.
    root = Path(tempfile.mkdtemp(prefix="calcinosis-image-"))
    try:
        root.chmod(0o755)
        build = DOCKERFILE.stage("build")
        source = root / "src"  # WORKDIR /src of the build stage
        assert build.last("WORKDIR") == "/src"
        _copy_into(build, source)
        assert not (source / "tests").exists()
        assert not list(source.rglob("__pycache__"))
        environment = {**os.environ, **{k: v for k, v in build.env().items() if k.startswith("UV_")}}
        environment["UV_PROJECT_ENVIRONMENT"] = str(root / build.env()["UV_PROJECT_ENVIRONMENT"].lstrip("/"))
        for run in build.all("RUN"):
            if run.startswith("uv sync"):
                _run([str(UV), *run.split()[1:], "--python", SYSTEM_PYTHON], environment, source)
        _run([str(UV), "build", "--wheel", "--out-dir", str(root / "dist"), "--python", SYSTEM_PYTHON],
             environment, source)
        (wheel,) = (root / "dist").glob("calcinosis_cds-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            wheel_files = archive.namelist()
        # The runtime stage has the environment and nothing of the source tree.
        shutil.rmtree(source)
        shutil.rmtree(root / "dist")
        runtime = DOCKERFILE.stage()
        uid, _, gid = (runtime.last("USER") or "").partition(":")
        workdir = root / (runtime.last("WORKDIR") or "/app").lstrip("/")
        workdir.mkdir(parents=True)
        workdir.chmod(0o555)  # owned by root: read-only for the container user
        yield Image(root, int(uid), int(gid), wheel_files, time.monotonic() - started)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _profile(image: Image, service_name: str, scratch: str, extra_config: dict[str, str] | None = None) -> Path:
    """A fresh /data (owned by the container user) and /config (a read-only copy of deploy/config)."""
    data, config = image.host("/data"), image.host("/config")
    for path in (data, config):
        if path.exists():
            shutil.rmtree(path)
    data.mkdir()
    os.chown(data, image.uid, image.gid)
    shutil.copytree(DEPLOY / "config", config)
    for name, text in (extra_config or {}).items():
        (config / name).write_text(text, encoding="utf-8")
    for path in [config, *config.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    log_dir = image.root / scratch
    log_dir.mkdir(exist_ok=True)
    return log_dir / f"{service_name}.log"


def _start_as_the_image(image: Image, service_name: str, log_file: Path) -> tuple[ServiceProcess, dict[str, str]]:
    runtime = DOCKERFILE.stage()
    env_file = read_env_file(DEPLOY / ".env.example")
    assert env_file["CDS_AUDIT_KEY"] == ""
    env_file["CDS_AUDIT_KEY"] = AUDIT_KEY
    service = compose()["services"][service_name]
    environment = {name: image.to_host(value)
                   for name, value in container_environment(runtime, env_file, service).items()}
    argv = [*runtime.exec_form("ENTRYPOINT"), *runtime.exec_form("CMD")]
    executable = shutil.which(argv[0], path=environment["PATH"])
    assert executable is not None, "ENTRYPOINT is not on the image's PATH"
    assert executable.startswith(str(image.host("/opt/venv")))
    assert argv[1:4] == ["serve", "--host", "0.0.0.0"]  # noqa: S104 (what the image does; see module docstring)
    process = start_service(environment, log_file, command=[executable, "serve"], port=free_port(),
                            cwd=image.host(runtime.last("WORKDIR") or "/app"), user=image.uid)
    return process, environment


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Uid:\s+(\d+)", status, flags=re.MULTILINE)
    assert found is not None
    return int(found.group(1))


def _exercise(service: ServiceProcess, image: Image, public_base: str, token_for: Any) -> dict[str, Any]:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        discovery = client.get("/cds-services", headers=bearer(token_for(public_base + "/cds-services")))
        answer = client.post(SERVICE, json={**EXAMPLE, "hookInstance": "6d2b1a4e-7f1c-4a55-9a63-0c8f3e2d9b11"},
                             headers=bearer(token_for(public_base + SERVICE)))
        metrics = client.get("/metrics")
    return {"health": health, "ready": ready, "discovery": discovery, "answer": answer, "metrics": metrics}


def _check_contract(service: ServiceProcess, image: Image, calls: dict[str, Any]) -> None:
    assert calls["health"].status_code == 200
    assert calls["health"].json()["status"] == "ok"
    assert calls["ready"].status_code == 200
    assert calls["discovery"].status_code == 200
    assert [(s["id"], s["hook"]) for s in calls["discovery"].json()["services"]] == [
        ("calcinosis-assessment", "patient-view"), ("calcinosis-medication-safety", "order-select"),
        ("calcinosis-medication-safety", "order-sign")]
    assert calls["answer"].status_code == 200, calls["answer"].text
    documented = json.loads((ROOT / "examples" / "patient-view-response.json").read_text(encoding="utf-8"))
    assert [c["summary"] for c in calls["answer"].json()["cards"]] == [c["summary"] for c in documented["cards"]]
    assert calls["metrics"].status_code == 200
    assert _uid_of(service.pid) == image.uid != 0
    # Everything it wrote is under /data, owned by the container user; the working directory stayed empty.
    written = sorted(p.name for p in image.host("/data").iterdir())
    assert "audit.sqlite3" in written
    assert all(p.stat().st_uid == image.uid for p in image.host("/data").iterdir())
    assert list(image.host("/app").iterdir()) == []


def _check_clean_stop(image: Image, service: ServiceProcess, exit_code: int) -> None:
    """``docker stop`` sends SIGTERM: the lifespan closes the store (its checkpoint goes to /data), then
    uvicorn re-raises the signal, so the process ends by SIGTERM (Docker reports 143) or with 0."""
    assert exit_code in {0, -15}, service.log()[-2000:]
    assert "Application shutdown complete." in service.log()
    assert "Traceback" not in service.log()
    assert image.host("/data/audit.sqlite3.checkpoints.jsonl").is_file()


def _healthcheck(environment: dict[str, str], port: int, uid: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, as is, with only the port changed."""
    command = [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in DOCKERFILE.healthcheck()]
    executable = shutil.which(command[0], path=environment["PATH"])
    assert executable is not None
    return subprocess.run([executable, *command[1:]], env=environment, capture_output=True, text=True, timeout=30,
                          check=False, user=uid, group=uid, extra_groups=[])


def test_the_wheel_holds_the_package_and_its_data(image: Image) -> None:
    files = image.wheel_files
    assert "hooks/py.typed" in files
    assert "fhir_mappings/py.typed" in files
    for knowledge in ("ruleset", "rules", "red_flags", "workup", "therapy", "messages"):
        assert f"hooks/engine/knowledge/{knowledge}.yaml" in files
    assert "fhir_mappings/tables/concepts.csv" in files
    assert not [f for f in files if f.startswith(("tests/", "deploy/", "bench/"))]


def test_the_sandbox_profile_starts_and_answers_as_the_image(image: Image) -> None:
    log_file = _profile(image, "cds-sandbox", "logs")
    service, environment = _start_as_the_image(image, "cds-sandbox", log_file)
    key = SigningKey.from_jwk(SANDBOX_KEY)
    try:
        service.wait_healthy()
        assert environment["CDS_ENVIRONMENT"] == "test"
        public_base = environment["CDS_PUBLIC_BASE_URL"]
        calls = _exercise(service, image, public_base, lambda aud: sandbox_token(
            key, iss="https://sandbox.cds-hooks.org", aud=aud, jku="https://sandbox.cds-hooks.org/.well-known/jwks.json",
            now=int(time.time())))
        health = _healthcheck(environment, int(service.base_url.rsplit(":", 1)[1]), image.uid)
        _check_contract(service, image, calls)
    finally:
        exit_code = service.stop()
    assert health.returncode == 0, health.stderr
    _check_clean_stop(image, service, exit_code)
    print(f"\nimage contract: build emulated in {image.build_seconds:.1f} s")


def test_the_production_profile_starts_and_answers_as_the_image(image: Image) -> None:
    ehr = SigningKey.es384("ehr-2026")
    trust = json.dumps({"issuers": [{"iss": "https://ehr.example.org",
                                     "jku": ["https://ehr.example.org/.well-known/jwks.json"],
                                     "jwks": {"keys": [ehr.public_jwk()]}, "algorithms": ["ES384"]}]})
    # The operator's own trust file, where .env.example says it goes.
    log_file = _profile(image, "cds", "logs", extra_config={"trust.yaml": trust})
    service, environment = _start_as_the_image(image, "cds", log_file)
    try:
        service.wait_healthy()
        assert environment["CDS_ENVIRONMENT"] == "production"
        public_base = environment["CDS_PUBLIC_BASE_URL"]
        assert public_base.startswith("https://")
        calls = _exercise(service, image, public_base, lambda aud: sandbox_token(
            ehr, iss="https://ehr.example.org", aud=aud, jku="https://ehr.example.org/.well-known/jwks.json",
            now=int(time.time())))
        anonymous = httpx.post(service.base_url + SERVICE, json=EXAMPLE, timeout=10)
        _check_contract(service, image, calls)
    finally:
        exit_code = service.stop()
    assert anonymous.status_code == 401  # production: authentication on
    _check_clean_stop(image, service, exit_code)
