"""The knowledge browser: every rule, flag, work-up item, option, caution and code, for its maintainers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_mappings.terminology import concept_rows
from hooks.engine.knowledge import load_knowledge
from hooks.pages.html import PAGE_CSP
from tests.conftest import test_settings as make_settings

K = load_knowledge()


async def test_the_browser_shows_every_piece_of_knowledge_with_its_citation(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        page = await client.get("/knowledge")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == PAGE_CSP
    html = page.text
    for rule in K.rules:
        assert f"<th scope=\"row\"><code>{rule.id}</code></th>" in html, rule.id
    for item in (*K.flags, *K.risks, *K.workup, *K.options, *K.cautions):
        assert f"<code>{item.id}</code>" in html, item.id
    assert "seed 001" in html  # a rule's basis
    assert "metastatic +3, calciphylaxis +1, dystrophic −2, idiopathic −3" in html  # R11's points
    assert K.version in html
    assert K.content_hash in html
    assert "contraindicated" in html
    assert "avoid" in html
    assert "calcinosis-cds knowledge check DIR" in html
    code_rows = sum(int(n) for n in re.findall(r'data-table="codes-\w+">\s*<caption>[^(]*\((\d+)\)', html))
    assert code_rows == len(concept_rows())
    assert "VERIFIED-secondary" in html


async def test_the_browser_in_french(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        html = (await client.get("/knowledge", headers={"Accept-Language": "fr"})).text
    assert '<html lang="fr">' in html
    assert "Règles de score" in html
    assert "métastatique +3" in html
    assert "contre-indiqué" in html
    assert "Tables de codes\u00a0: lab" in html


async def test_the_browser_can_be_turned_off(make_client: Callable[..., Any]) -> None:
    async with make_client(settings=make_settings(knowledge_page=False)) as client:
        page = await client.get("/knowledge")
        browser = await client.get("/knowledge", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.json()["resourceType"] == "OperationOutcome"
    assert browser.status_code == 404
    assert 'data-refusal="disabled"' in browser.text


async def test_the_browser_needs_no_credential_even_when_calls_do(make_client: Callable[..., Any],
                                                                  tmp_path: Any) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text("issuers:\n  - iss: https://ehr.test\n    jwks: {keys: []}\n", encoding="utf-8")
    async with make_client(settings=make_settings(auth_required=True, trust_file=trust)) as client:
        browser = await client.get("/knowledge")
        call = await client.post("/cds-services/calcinosis-assessment", json={})
        page = await client.get("/assessment/5a9cf0f6-6b58-4a3b-b7a4-2ad0c16f4b1e")
    assert browser.status_code == 200
    assert call.status_code == 401
    assert page.status_code == 403  # PHI: the card's link or nothing
