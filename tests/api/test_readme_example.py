"""The README's example request gives exactly the documented response (examples/), in both languages.

The responses hold the cards' assessment links with their signed token: the tests' clock is fixed
(``FIXED_NOW``) and so is the key (``test_settings``), and tokens are deterministic, so the files are compared
exactly, tokens included. After a deliberate change to the cards, rewrite them with
``.venv/bin/python -m tests.api.test_readme_example`` and review the diff.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as settings_for_test

EXAMPLES = Path(__file__).parents[2] / "examples"
RESPONSES = [("en", "patient-view-response.json"), ("fr", "patient-view-response.fr.json")]


@pytest.mark.parametrize(("language", "response_file"), RESPONSES)
async def test_readme_example_response(make_client: Callable[..., Any], language: str, response_file: str) -> None:
    request = json.loads((EXAMPLES / "patient-view-request.json").read_text(encoding="utf-8"))
    documented = json.loads((EXAMPLES / response_file).read_text(encoding="utf-8"))
    async with make_client() as client:
        response = await client.post("/cds-services/calcinosis-assessment", json=request,
                                     headers={"Accept-Language": language})
    assert response.status_code == 200
    assert response.json() == documented


async def _write_examples() -> None:
    request = json.loads((EXAMPLES / "patient-view-request.json").read_text(encoding="utf-8"))
    app = create_app(settings_for_test(), audit_store=MemoryAuditStore(), clock=lambda: FIXED_NOW)
    async with running_client(app) as client:
        for language, response_file in RESPONSES:
            response = await client.post("/cds-services/calcinosis-assessment", json=request,
                                         headers={"Accept-Language": language})
            text = json.dumps(response.json(), indent=2, ensure_ascii=False) + "\n"
            (EXAMPLES / response_file).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(_write_examples())
