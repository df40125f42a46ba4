"""Shared fixtures: an in-process app driven through httpx.ASGITransport (with its lifespan)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
# Everything a test writes goes under one temporary directory per run, never into the working tree.
_TEST_DATA_DIR = Path(tempfile.mkdtemp(prefix="calcinosis-test-data-"))
atexit.register(shutil.rmtree, _TEST_DATA_DIR, ignore_errors=True)
FIXED_NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def load_fixture(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "auth_required": False,
        "public_base_url": "https://testserver",
        "audit_key": "test-audit-key",
        # Tests that need a durable store say so; nothing writes into the working tree.
        "audit_dsn": "memory://",
        "data_dir": _TEST_DATA_DIR,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def memory_store() -> MemoryAuditStore:
    return MemoryAuditStore()


@pytest.fixture
def make_client(memory_store: MemoryAuditStore) -> Callable[..., Any]:
    """``async with make_client(settings=..., **create_app_kwargs) as client``."""

    def factory(settings: Settings | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("audit_store", memory_store)
        kwargs.setdefault("clock", lambda: FIXED_NOW)
        return running_client(create_app(settings or test_settings(), **kwargs))

    return factory
