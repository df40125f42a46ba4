"""Runs the deployment's front door for tests: ``calcinosis-cds serve`` behind nginx with deploy/proxy's config.

The nginx binary comes from Debian's package (``make setup-proxy``, which ``make test`` runs); the path is in
``CALCINOSIS_PROXY_NGINX``. Both processes listen on 127.0.0.1 on free ports and are stopped by their own PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.service_process import START_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "proxy" / "nginx.conf.template"
CLI = Path(sys.executable).with_name("calcinosis-cds")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_binary() -> Path:
    configured = os.environ.get("CALCINOSIS_PROXY_NGINX")
    if not configured or not Path(configured).is_file():
        pytest.fail("CALCINOSIS_PROXY_NGINX is not set to the nginx binary. Run `make setup-proxy`, then set "
                    "CALCINOSIS_PROXY_NGINX=$PWD/.proxy/usr/sbin/nginx (make test does both).")
    return Path(configured)


def render(template: str, values: dict[str, str]) -> str:
    """What ``envsubst`` with the documented variable list does: only these names, nginx's own left alone."""
    rendered = string.Template(template).safe_substitute(values)
    leftover = [name for name in values if f"${{{name}}}" in rendered]
    if leftover:
        raise AssertionError(f"not substituted: {leftover}")
    return rendered


@dataclass
class Deployment:
    url: str
    service_url: str
    proxy: subprocess.Popen[bytes]
    service: subprocess.Popen[bytes]
    log_dir: Path


def _wait(url: str, processes: list[subprocess.Popen[bytes]], log_dir: Path) -> None:
    until = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < until:
        for process in processes:
            if process.poll() is not None:
                logs = "\n".join(p.read_text()[-1500:] for p in log_dir.glob("*.log"))
                pytest.fail(f"a process of the deployment exited at start:\n{logs}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"{url}/healthz did not answer within {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def deployed(work: Path, *, max_conn_per_client: int) -> Iterator[Deployment]:
    """The service on one free port, nginx in front of it on another (both on 127.0.0.1)."""
    service_port, proxy_port = free_port(), free_port()
    runtime = work / "proxy-runtime"
    runtime.mkdir(parents=True)
    # nginx's workers (user nobody when started as root) create their body buffers in here.
    for directory in (work, runtime):
        directory.chmod(0o755)
    config = work / "nginx.conf"
    config.write_text(render(TEMPLATE.read_text(), {
        "CDS_PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
        "CDS_UPSTREAM": f"127.0.0.1:{service_port}",
        "CDS_PROXY_RUNTIME_DIR": str(runtime),
        "CDS_PROXY_MAX_CONN_PER_CLIENT": str(max_conn_per_client),
    }))
    env = dict(
        os.environ, CDS_ENVIRONMENT="test", CDS_AUTH_REQUIRED="false", CDS_AUDIT_KEY="proxy-test-audit-key",
        CDS_DATA_DIR=str(work / "data"), CDS_AUDIT_DSN=f"sqlite:///{work / 'data' / 'audit.sqlite3'}",
        CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{proxy_port}",
    )
    with (work / "service.log").open("wb") as service_log, (work / "proxy.log").open("wb") as proxy_log:
        service = subprocess.Popen([str(CLI), "serve", "--host", "127.0.0.1", "--port", str(service_port)],
                                   env=env, stdout=service_log, stderr=subprocess.STDOUT, cwd=work)
        proxy = subprocess.Popen([str(nginx_binary()), "-e", "stderr", "-p", str(runtime), "-c", str(config),
                                  "-g", "daemon off;"], stdout=proxy_log, stderr=subprocess.STDOUT, cwd=work)
    try:
        _wait(f"http://127.0.0.1:{service_port}", [service, proxy], work)
        _wait(f"http://127.0.0.1:{proxy_port}", [service, proxy], work)
        yield Deployment(f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{service_port}", proxy, service, work)
    finally:
        _stop(proxy)
        _stop(service)
