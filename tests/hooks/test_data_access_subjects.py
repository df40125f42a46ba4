"""Wrong-patient data is an error, not silence (issue 16 item 6).

Every resource in prefetch or fetched from ``fhirServer`` whose ``subject``/``patient`` is present must be a
reference resolving to ``context.patientId``: relative (``Patient/p1``, also versioned), or absolute on the
same ``fhirServer``. Anything else fails the call: 400 for prefetch, 412 for the FHIR fallback, naming the key,
and the call is audited with the queries it made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import respx

from hooks.audit import MemoryAuditStore
from tests.conftest import test_settings as settings_for
from tests.hooks.test_data_access import BASE, URL, body, mock_ehr, ok, searchset
from tests.integration.stub_service import stub_registry

PATIENT = {"resourceType": "Patient", "id": "p1"}


def about(subject: Any, kind: str = "Condition", ident: str = "c1") -> dict[str, Any]:
    return {"resourceType": kind, "id": ident, "subject": subject}


def full_prefetch(**keys: Any) -> dict[str, Any]:
    prefetch: dict[str, Any] = {"patient": PATIENT, "conditions": searchset(), "observations": searchset(),
                                "medications": searchset()}
    prefetch.update(keys)
    return prefetch


@pytest.fixture
def client_for(make_client: Callable[..., Any]) -> Callable[..., Any]:
    def factory() -> Any:
        settings = settings_for(fhir_allowed_bases=[BASE], fhir_search_count=0)
        return make_client(settings=settings, registry=stub_registry())

    return factory


FOREIGN_SUBJECTS = [
    {"reference": "Patient/p2"},
    {"reference": "https://evil.example.org/fhir/Patient/p1"},  # same id on a foreign host
    {"reference": "http://ehr.example.org/fhir/Patient/p1"},  # same host, other scheme
    {"reference": "https://ehr.example.org/other/Patient/p1"},  # same host, other base
    {"reference": "p1"},
    {"reference": "Group/p1"},
    {"reference": "Patient/p1x"},
    {"reference": "urn:uuid:0f0c3c5c-2b54-4b44-9a2e-1c7d1d9bd0a1"},
    {"identifier": {"system": "urn:mrn", "value": "p1"}},  # a bare identifier is not a reference
    {"display": "p1"},
    {"reference": 5},
    "Patient/p1",
]


@pytest.mark.parametrize("subject", FOREIGN_SUBJECTS)
async def test_prefetch_about_another_patient_is_a_400_naming_the_key(
    client_for: Any, memory_store: MemoryAuditStore, subject: Any
) -> None:
    prefetch = full_prefetch(conditions=searchset(about(subject)))
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["prefetch.conditions"]
    assert "context.patientId" in issue["diagnostics"]
    assert [(r.http_status, r.reason_class) for r in memory_store.calls] == [(400, "wrong-patient")]


async def test_a_prefetched_patient_that_is_another_patient_is_a_400(
    client_for: Any, memory_store: MemoryAuditStore
) -> None:
    async with client_for() as client:
        response = await client.post(URL, json=body(full_prefetch(patient={"resourceType": "Patient", "id": "p2"})))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["prefetch.patient"]


@pytest.mark.parametrize(
    "subject",
    [{"reference": "Patient/p1"}, {"reference": "Patient/p1/_history/3"},
     {"reference": f"{BASE}/Patient/p1"}, {"reference": "https://EHR.example.org:443/fhir/Patient/p1"},
     {"reference": "Patient/p1", "display": "Jane"}],
)
async def test_subjects_resolving_to_the_patient_are_used(client_for: Any, subject: Any) -> None:
    prefetch = full_prefetch(conditions=searchset(about(subject)))
    async with client_for() as client:
        response = await client.post(URL, json=body(prefetch))
    assert response.status_code == 200
    assert "conditions: 1" in [card["summary"] for card in response.json()["cards"]]


@pytest.mark.parametrize("key", ["conditions", "medications"])
@respx.mock(assert_all_called=False)
async def test_fetched_resources_about_another_patient_are_a_412_naming_the_key(
    respx_mock: respx.MockRouter, client_for: Any, memory_store: MemoryAuditStore, key: str
) -> None:
    kind = {"conditions": "Condition", "medications": "MedicationRequest"}[key]
    mock_ehr(respx_mock, **{kind: ok(searchset(about({"reference": "Patient/p2"}, kind)))})
    async with client_for() as client:
        # Even a key the assessment could do without (medications): data about someone else is never ignored.
        response = await client.post(URL, json=body({k: v for k, v in full_prefetch().items() if k != key}))
    assert response.status_code == 412
    issue = response.json()["issue"][0]
    assert issue["expression"] == [f"prefetch.{key}"]
    record = memory_store.calls[-1]
    assert (record.http_status, record.reason_class) == (412, "wrong-patient")
    # The query that brought the data is on record.
    assert [q.key for q in record.queries] == [key]


@respx.mock(assert_all_called=False)
async def test_a_next_page_about_another_patient_is_a_412(respx_mock: respx.MockRouter, client_for: Any) -> None:
    mock_ehr(respx_mock, Observation=ok(searchset(about({"reference": "Patient/p2"}, "Observation", "o2"))))
    first_page = searchset(about({"reference": "Patient/p1"}, "Observation", "o1"),
                           next_url=f"{BASE}/Observation?patient=p1&page=2")
    async with client_for() as client:
        response = await client.post(URL, json=body(full_prefetch(observations=first_page)))
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["prefetch.observations"]


# --------------------------------------------------------------------------- memory per call (issue 16 item 5)


@respx.mock(assert_all_called=False)
async def test_fhir_answers_of_one_call_are_capped_together(
    respx_mock: respx.MockRouter, make_client: Callable[..., Any]
) -> None:
    """Each answer is under the per-response cap; together they pass the per-call cap: the call gets 412."""
    padding = "x" * (600 * 1024)
    big = {kind: ok(searchset(*(dict(about({"reference": "Patient/p1"}, kind, f"r{n}"), note=padding)
                                for n in range(2))))
           for kind in ("Condition", "Observation")}
    mock_ehr(respx_mock, **big)
    settings = settings_for(fhir_allowed_bases=[BASE], fhir_search_count=0, fhir_max_call_bytes=2 * 1024 * 1024)
    async with make_client(settings=settings, registry=stub_registry()) as client:
        response = await client.post(URL, json=body({"patient": PATIENT}))
    assert response.status_code == 412
    assert "the FHIR answers of this call are over 2097152 bytes" in response.json()["issue"][0]["diagnostics"]
