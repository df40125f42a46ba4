"""Every calcinosis fixture patient gives exactly the stored response, in both languages, and the same audit
document and chain hash (issue 14 item 5: the guard for every performance change).

Each bundle of ``tests/fixtures/calcinosis/`` is sent as a full prefetch (``build_prefetch``, as an EHR would)
to the in-process app at the tests' fixed clock, with a hookInstance derived from the file name, so the cards,
their uuids and their signed links are deterministic. The response bytes are compared with
``tests/fixtures/expected-cards/<bundle>.<language>.json`` (orjson of the stored JSON keeps its member order, so
this is a byte comparison of what the EHR receives). The audit record of the call, with its two run-dependent
fields pinned (``record_id``, ``latency_ms``), must encode to the stored document digest and chain hash
(``audit.json``). After a deliberate change to the cards or the audit record, rewrite the files with
``.venv/bin/python -m tests.api.test_fixture_cards`` and review the diff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from hooks.app import create_app
from hooks.audit import HookCallRecord, MemoryAuditStore
from hooks.audit.chain import GENESIS, chain_hash
from hooks.audit.codec import call_row
from hooks.services.calcinosis import prefetch_templates
from tests.conftest import FIXED_NOW, FIXTURES, running_client
from tests.conftest import test_settings as settings_for_test
from tests.integration.prefetch_builder import build_prefetch

BUNDLES = sorted((FIXTURES / "calcinosis").glob("*.json"))
EXPECTED = FIXTURES / "expected-cards"
AUDIT_FILE = EXPECTED / "audit.json"
LANGUAGES = ("en", "fr")
CHAIN_KEY = b"fixture-cards-chain-key"


def _request(bundle_path: Path) -> dict[str, Any]:
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    context = {"userId": "Practitioner/fixture", "patientId": patient_id}
    return {
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"calcinosis-fixture:{bundle_path.stem}")),
        "hook": "patient-view",
        "context": context,
        "prefetch": build_prefetch(bundle, prefetch_templates(), context),
    }


def _audit_digest(record: HookCallRecord, name: str) -> dict[str, str]:
    record.record_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"calcinosis-fixture-record:{name}"))
    record.latency_ms = 1.0
    row = call_row(record)
    row["seq"] = 1
    return {
        "document_sha256": hashlib.sha256(row["document"].encode()).hexdigest(),
        "chain_hash": chain_hash(CHAIN_KEY, GENESIS, row).hex(),
    }


async def _answers(bundle_path: Path) -> list[tuple[str, bytes, dict[str, str]]]:
    """(language, response bytes, audit digests) for one bundle."""
    store = MemoryAuditStore()
    app = create_app(settings_for_test(), audit_store=store, clock=lambda: FIXED_NOW)
    request = _request(bundle_path)
    found = []
    async with running_client(app) as client:
        for language in LANGUAGES:
            response = await client.post("/cds-services/calcinosis-assessment", json=request,
                                         headers={"Accept-Language": language})
            assert response.status_code == 200, response.text
            digest = _audit_digest(store.calls[-1], f"{bundle_path.stem}.{language}")
            found.append((language, response.content, digest))
    return found


@pytest.mark.parametrize("bundle_path", BUNDLES, ids=[path.stem for path in BUNDLES])
async def test_fixture_cards_and_audit_unchanged(bundle_path: Path) -> None:
    stored_audit = json.loads(AUDIT_FILE.read_text(encoding="utf-8"))
    for language, content, digest in await _answers(bundle_path):
        expected = json.loads((EXPECTED / f"{bundle_path.stem}.{language}.json").read_text(encoding="utf-8"))
        assert content == orjson.dumps(expected), f"{bundle_path.stem} ({language}): the cards changed"
        assert digest == stored_audit[f"{bundle_path.stem}.{language}"], (
            f"{bundle_path.stem} ({language}): the audit document or its chain hash changed"
        )


async def _write_expected() -> None:
    audit: dict[str, dict[str, str]] = {}
    for bundle_path in BUNDLES:
        for language, content, digest in await _answers(bundle_path):
            text = json.dumps(json.loads(content), indent=1, ensure_ascii=False) + "\n"
            (EXPECTED / f"{bundle_path.stem}.{language}.json").write_text(text, encoding="utf-8")
            audit[f"{bundle_path.stem}.{language}"] = digest
    AUDIT_FILE.write_text(json.dumps(audit, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(_write_expected())
