"""A client that disconnects before its request body arrived (issue 14): the call is audited with its own
reason class, never as a 500, and nothing is logged as an error."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from tests.conftest import FIXED_NOW
from tests.conftest import test_settings as settings_for_test


async def _call_then_disconnect(app: Any, path: str) -> list[dict[str, Any]]:
    """The request head arrives (a 20 KB body announced), then the connection closes."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"20000")],
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(("path", "reason"), [
    ("/cds-services/calcinosis-assessment", "client-disconnected"),
    ("/cds-services/calcinosis-assessment/feedback", "feedback:client-disconnected"),
])
async def test_a_disconnected_client_is_its_own_reason_class(
    path: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryAuditStore()
    app = create_app(settings_for_test(), audit_store=store, clock=lambda: FIXED_NOW)
    async with app.router.lifespan_context(app):
        with caplog.at_level(logging.INFO):
            sent = await _call_then_disconnect(app, path)
    (record,) = store.calls
    assert record.reason_class == reason
    assert record.http_status == 499
    assert not any(message.get("status") == 500 for message in sent)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
