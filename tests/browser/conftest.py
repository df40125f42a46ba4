"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright from PyPI) against the real service.

The service runs as its own process (``tests.support.service_process``) on a free 127.0.0.1 port with a
SQLite audit store in a temporary directory and a clock read from a file (``serve_fixed_clock``); it is
stopped by its PID. Chromium gets a
fresh profile and the flags this machine needs; every request it makes to anything but the service is
refused and counted (the pages work offline). Screenshots go to ``test-artifacts/browser/`` (git-ignored;
``CALCINOSIS_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

from tests.conftest import FIXED_NOW
from tests.support.service_process import ServiceProcess, clean_environment, free_port, running_service

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_MS = 15_000
AUDIT_KEY = "browser-test-audit-key"


@dataclass
class Service:
    process: ServiceProcess
    clock_file: Path

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def set_clock(self, moment: Any) -> None:
        self.clock_file.write_text(moment.isoformat(), encoding="utf-8")

    def call(self, body: dict[str, Any], language: str = "en") -> list[dict[str, Any]]:
        response = httpx.post(f"{self.base_url}/cds-services/calcinosis-assessment", json=body, timeout=30,
                              headers={"Accept-Language": language})
        assert response.status_code == 200, response.text
        cards: list[dict[str, Any]] = response.json()["cards"]
        return cards


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    work = Path(tempfile.mkdtemp(prefix="calcinosis-browser-"))
    port = free_port()
    clock_file = work / "clock.txt"
    clock_file.write_text(FIXED_NOW.isoformat(), encoding="utf-8")
    env = clean_environment(
        CDS_ENVIRONMENT="test", CDS_AUTH_REQUIRED="false", CDS_AUDIT_KEY=AUDIT_KEY,
        CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", CDS_DATA_DIR=str(work),
        CDS_AUDIT_DSN=f"sqlite:///{work / 'audit.sqlite3'}")
    command = [sys.executable, "-m", "tests.browser.serve_fixed_clock", "--clock-file", str(clock_file)]
    try:
        with running_service(env, work / "service.log", port=port, command=command, cwd=ROOT) as process:
            yield Service(process, clock_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Browser:
    context: BrowserContext
    allowed_origin: str
    blocked: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def open(self, url: str, **goto: Any) -> tuple[Page, int]:
        page = self.context.new_page()
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        response = page.goto(url, wait_until="load", **goto)
        assert response is not None
        return page, response.status


# Module scope, not session: while Playwright's sync API is open its event loop counts as running in this
# thread, and every later asyncio test of the session would fail ("cannot be called from a running loop").
@pytest.fixture(scope="module")
def browser(service: Service) -> Iterator[Browser]:
    assert CHROMIUM.exists(), "make test installs Debian's chromium (.ci/ensure-chromium)"
    profile = Path(tempfile.mkdtemp(prefix="calcinosis-chromium-"))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900}, locale="en-GB", timeout=PAGE_TIMEOUT_MS)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        handle = Browser(context, service.base_url)

        def only_the_service(route: Route) -> None:
            if route.request.url.startswith(service.base_url + "/"):
                route.continue_()
            else:
                handle.blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_service)
        try:
            yield handle
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    directory = Path(os.environ.get("CALCINOSIS_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
