"""The README's example request gives exactly the documented response (examples/), in both languages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(("language", "response_file"), [("en", "patient-view-response.json"),
                                                          ("fr", "patient-view-response.fr.json")])
async def test_readme_example_response(make_client: Callable[..., Any], language: str, response_file: str) -> None:
    request = json.loads((EXAMPLES / "patient-view-request.json").read_text(encoding="utf-8"))
    documented = json.loads((EXAMPLES / response_file).read_text(encoding="utf-8"))
    async with make_client() as client:
        response = await client.post("/cds-services/calcinosis-assessment", json=request,
                                     headers={"Accept-Language": language})
    assert response.status_code == 200
    assert response.json() == documented
