"""``/readyz`` tells the truth (issue 16 items 1 and 9): a saturated FHIR pool and a disk that refuses writes
make it 503 with an OperationOutcome naming the problem; it is 200 again once the problem is gone.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hooks.app import create_app
from tests.conftest import running_client
from tests.conftest import test_settings as settings_for
from tests.support.disk import fill, small_disk
from tests.support.loopback_fhir import LoopbackFhir


def _call(server: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": server,
        "context": {"userId": "Practitioner/u1", "patientId": "p1"},
    }


async def test_readyz_reports_a_saturated_fhir_pool() -> None:
    async with LoopbackFhir().running() as hanging:
        settings = settings_for(
            fhir_allowed_bases=[hanging.base], fhir_allow_loopback_http=True, fhir_connections_per_origin=1,
            fhir_deadline_s=1.5, fhir_request_timeout_s=1.5,
        )
        async with running_client(create_app(settings)) as client:
            assert (await client.get("/readyz")).status_code == 200
            calls = asyncio.create_task(client.post("/cds-services/calcinosis-assessment", json=_call(hanging.base)))
            await asyncio.sleep(0.3)
            saturated = await client.get("/readyz")
            assert (await calls).status_code == 412
            after = await client.get("/readyz")
    assert saturated.status_code == 503
    assert saturated.json()["resourceType"] == "OperationOutcome"
    diagnostics = saturated.json()["issue"][0]["diagnostics"]
    assert f"FHIR connections to http://127.0.0.1:{hanging.port} saturated" in diagnostics
    assert after.status_code == 200


async def test_readyz_reports_a_disk_that_refuses_writes() -> None:
    with small_disk() as disk:
        settings = settings_for(audit_dsn=f"sqlite:///{disk}/audit.sqlite3", data_dir=disk)
        async with running_client(create_app(settings)) as client:
            assert (await client.get("/readyz")).status_code == 200
            filler = fill(disk)
            full = await client.get("/readyz")
            filler.unlink()
            freed = await client.get("/readyz")
    assert full.status_code == 503
    assert full.json()["resourceType"] == "OperationOutcome"
    assert f"the disk of {disk} refuses writes (ENOSPC)" in full.json()["issue"][0]["diagnostics"]
    assert freed.status_code == 200
