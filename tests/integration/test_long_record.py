"""A 10-year dialysis record (1,200 laboratory Observations) gets its cards in every mode, within the deadline.

Issue 11: such a record got 412 in every mode (prefetch with a ``next`` link, the fallback past 10 pages or
past the 1.5 s deadline). Here it is loaded into the real FHIR server and asked for four ways:

* no prefetch: the service queries the server, newest first, and stops once the list reaches past the
  365-day look-back (the completeness rule, recorded in the audit);
* the EHR prefetches the first page and a ``next`` link: the service follows it, and stops the same way;
* a server that ignores ``_sort`` (oldest first): every page is read, within the page cap;
* everything in one prefetch body, also one larger than the old 5 MiB limit.

All four give the same cards, and the default deadline (1.5 s) is kept.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore, PrefetchKeyState
from hooks.services.calcinosis import prefetch_templates
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as settings_for
from tests.fhir_builders import condition, lab, patient
from tests.integration.conftest import FhirSandbox, loader
from tests.integration.prefetch_builder import build_prefetch

pytestmark = pytest.mark.sandbox

PID = "long-dialysis-record"
MONTHS = 120
THIGH = "371305003"
# Ten analytes drawn monthly for ten years: 1,200 Observations. The newest month is the one that matters.
MONTHLY = [
    ("17861-6", 9.3, "mg/dL"), ("2777-1", 5.6, "mg/dL"), ("1751-7", 3.8, "g/dL"), ("2731-8", 420, "pg/mL"),
    ("2160-0", 8.1, "mg/dL"), ("98979-8", 6, "mL/min/{1.73_m2}"), ("6768-6", 105, "U/L"),
    ("19123-9", 2.1, "mg/dL"), ("1963-8", 23, "mmol/L"), ("62292-8", 24, "ng/mL"),
]
NEWEST = {"2777-1": 7.6, "2731-8": 980}
SCOPE = ("patient/Patient.read patient/Condition.read patient/Observation.read patient/MedicationRequest.read "
         "patient/Procedure.read")


def _record() -> dict[str, Any]:
    resources: list[dict[str, Any]] = [
        patient(PID, birth="1951-03-02", gender="male"),
        condition("N18.6", pid=PID, onset_days_ago=3700), condition("Z99.2", pid=PID, onset_days_ago=3650),
        condition("46742003", "snomed", pid=PID, sites=(THIGH,), onset_days_ago=9,
                  text="Painful necrotic ulcer of the thigh"),
    ]
    labs = []
    for month in range(MONTHS):
        days_ago = 3 + 30.4 * month
        for code, value, unit in MONTHLY:
            newest = NEWEST.get(code) if month == 0 else None
            labs.append(lab(code, newest or value, unit, pid=PID, days_ago=days_ago, rid=f"{PID}-{code}-{month}"))
    # Loaded in no date order, so a search without _sort comes back unsorted (a server that ignores _sort).
    random.Random(11).shuffle(labs)
    resources += labs
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in resources]}


@pytest.fixture(scope="module")
def record(fhir_sandbox: FhirSandbox) -> Iterator[dict[str, Any]]:
    bundle = _record()
    assert sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation") == 1200
    with httpx.Client(timeout=120, trust_env=False) as client:
        status = loader.load_bundle(client, fhir_sandbox.base, bundle, token=fhir_sandbox.token)
    assert 200 <= status < 300
    return bundle


def _app(sandbox: FhirSandbox, store: MemoryAuditStore) -> Any:
    # The default deadline (CDS_FHIR_DEADLINE_S = 1.5 s) and page cap: the record must fit within them.
    settings = settings_for(fhir_allowed_bases=[sandbox.base], fhir_allow_loopback_http=True)
    assert settings.fhir_deadline_s == 1.5
    return create_app(settings, audit_store=store, clock=lambda: FIXED_NOW)


def _body(sandbox: FhirSandbox, instance: str, prefetch: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view", "hookInstance": instance,
        "context": {"userId": "Practitioner/example", "patientId": PID},
        "fhirServer": sandbox.base,
        "fhirAuthorization": {"access_token": sandbox.token, "token_type": "Bearer", "expires_in": 300,
                              "scope": SCOPE, "subject": "calcinosis-cds", "patient": PID},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def _first_page(sandbox: FhirSandbox, sort: str | None) -> dict[str, Any]:
    """Page one of the Observation template as the EHR's own FHIR server answers it (with its next link).

    ``sort=None`` stands for a server that ignores ``_sort``: the record was loaded in shuffled order.
    """
    query = prefetch_templates()["observations"].replace("{{context.patientId}}", PID)
    query = query.replace("&_sort=-date", "" if sort is None else f"&_sort={sort}")
    with httpx.Client(timeout=30, trust_env=False) as client:
        answer = client.get(f"{sandbox.base}/{query}", headers={"Authorization": f"Bearer {sandbox.token}"})
    answer.raise_for_status()
    page: dict[str, Any] = answer.json()
    assert len(page["entry"]) == 100
    assert any(link["relation"] == "next" for link in page["link"])
    return page


def _cards(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return [{k: v for k, v in card.items() if k not in {"uuid", "suggestions"}} for card in cards]


def _observations(store: MemoryAuditStore) -> tuple[PrefetchKeyState, int]:
    record = store.calls[-1]
    (state,) = [s for s in record.prefetch if s.key == "observations"]
    assert all(q.outcome == "ok" for q in record.queries)
    return state, sum(1 for q in record.queries if q.key == "observations")


async def test_ten_years_of_dialysis_labs_get_the_same_cards_in_every_mode(
        fhir_sandbox: FhirSandbox, record: dict[str, Any]) -> None:
    store = MemoryAuditStore()
    instance = str(uuid.uuid4())
    full = build_prefetch(record, prefetch_templates(), {"patientId": PID})
    async with running_client(_app(fhir_sandbox, store)) as client:
        url = "/cds-services/calcinosis-assessment"

        reference = _cards(await client.post(url, json=_body(fhir_sandbox, instance, full)))
        state, pages = _observations(store)
        assert (state.resources, state.fetched, pages) == (1200, False, 0)
        kinds = [card["extension"]["calcinosis-cds"]["kind"] for card in reference]
        assert kinds[0] == "red-flag"
        assert reference[0]["indicator"] == "critical"

        fallback = _cards(await client.post(url, json=_body(fhir_sandbox, instance, None)))
        state, pages = _observations(store)
        assert fallback == reference
        # The service's own query asks for the look-back window only: complete by construction, and cheap.
        assert state.fetched
        assert state.complete_by == "query limited to date >= 2025-11-21 (the longest look-back)"
        assert (state.resources, pages) == (120, 2)

        # The EHR's newest-first first page stops 10 months back: the rest of the year is asked for, not the
        # next 11 pages; the page and the window together are the year, each result once.
        first = _first_page(fhir_sandbox, "-date")
        paged = _cards(await client.post(url, json=_body(fhir_sandbox, instance, {**full, "observations": first})))
        state, pages = _observations(store)
        assert paged == reference
        assert state.received == "present"
        assert (state.resources, pages) == (120, 2)
        assert state.complete_by == "query limited to date >= 2025-11-21 (the longest look-back)"

        # A first page that already reaches past the look-back is complete: nothing else is asked.
        first["entry"] += list(full["observations"]["entry"][100:130])
        reaching = _cards(await client.post(url, json=_body(fhir_sandbox, instance, {**full, "observations": first})))
        state, pages = _observations(store)
        assert reaching == reference
        assert (state.resources, pages) == (130, 0)
        assert state.complete_by is not None
        assert state.complete_by.startswith("newest-first list reaches 2025-")

        # A server that ignored _sort: its page is not newest first, so it proves nothing; the window is asked.
        ignored_sort = {**full, "observations": _first_page(fhir_sandbox, None)}
        unsorted = _cards(await client.post(url, json=_body(fhir_sandbox, instance, ignored_sort)))
        state, pages = _observations(store)
        assert unsorted == reference
        assert state.complete_by == "query limited to date >= 2025-11-21 (the longest look-back)"
        assert pages == 2
        in_window = {e["resource"]["id"] for e in full["observations"]["entry"][:120]}
        page_ids = {e["resource"]["id"] for e in ignored_sort["observations"]["entry"]}
        assert state.resources == len(in_window | page_ids)


async def test_a_prefetch_body_over_the_old_5_mib_limit_is_read(
        fhir_sandbox: FhirSandbox, record: dict[str, Any]) -> None:
    full = build_prefetch(record, prefetch_templates(), {"patientId": PID})
    observations = full["observations"]
    # Panels twice a week over the same ten years, in the same Bundle: about 6 MiB of JSON.
    extra = []
    for session in range(1, MONTHS * 8 + 1):
        for code, value, unit in MONTHLY:
            resource = lab(code, value, unit, pid=PID, days_ago=3 + 3.8 * session, rid=f"{PID}-s-{code}-{session}")
            extra.append({"fullUrl": f"Observation/{resource['id']}", "resource": resource})
    observations["entry"] = sorted(observations["entry"] + extra,
                                   key=lambda e: e["resource"]["effectiveDateTime"], reverse=True)
    body = _body(fhir_sandbox, str(uuid.uuid4()), full)
    size = len(httpx.Request("POST", "http://x", json=body).content)
    assert size > 5 * 1024 * 1024
    store = MemoryAuditStore()
    async with running_client(_app(fhir_sandbox, store)) as client:
        response = await client.post("/cds-services/calcinosis-assessment", json=body)
    cards = _cards(response)
    assert cards[0]["indicator"] == "critical"
    assert store.calls[-1].http_status == 200
