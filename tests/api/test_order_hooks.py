"""Issue 15 over HTTP: discovery, the hook-library order-select / order-sign requests (the shape the CDS Hooks
sandbox's Rx View and Rx Sign tabs send), strict context validation, cards, audit and feedback."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import respx

from hooks.audit import MemoryAuditStore
from tests.conftest import load_fixture
from tests.conftest import test_settings as service_settings
from tests.fhir_builders import medication, patient, prefetch_for
from tests.hooks.engine.order_support import draft, draft_bundle

SERVICE = "/cds-services/calcinosis-medication-safety"
LIBRARY = "cds-hooks-examples/hook-library-1.0.1"


def library_body(hook: str) -> dict[str, Any]:
    """The hook library's own example context (R4), with the prefetch an EHR sends for our templates."""
    context = copy.deepcopy(load_fixture(f"{LIBRARY}/{hook}-context-1-example-r4.json")["context"])
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch_for([patient(context["patientId"])]),
    }


def neonate_body(hook: str = "order-sign", **context: Any) -> dict[str, Any]:
    """A 10-day-old on IV calcium for whom ceftriaxone is being ordered."""
    resources = [patient("nb", birth="2026-11-11", gender="male"),
                 medication("A12AA03", pid="nb", rid="ca-infusion", days_ago=1)]
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": "nb",
                    "draftOrders": draft_bundle(draft("J01DD04", pid="nb", rid="cef"))},
        "prefetch": prefetch_for(resources),
    }
    body["context"].update(context)
    return body


async def test_discovery_lists_the_medication_safety_service_on_both_order_hooks(
    make_client: Callable[..., Any],
) -> None:
    async with make_client() as client:
        services = (await client.get("/cds-services")).json()["services"]
    ours = [s for s in services if s["id"] == "calcinosis-medication-safety"]
    assert sorted(s["hook"] for s in ours) == ["order-select", "order-sign"]
    for service in ours:
        assert set(service["prefetch"]) == {"patient", "conditions", "observations", "medications", "procedures"}
        assert service["prefetch"]["medications"] == "MedicationRequest?patient={{context.patientId}}&_count=100"


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
async def test_hook_library_examples_are_accepted_and_silent(make_client: Callable[..., Any], hook: str) -> None:
    # Amoxicillin/clavulanate and a pureed diet: no check is about them, so the answer is no card.
    async with make_client() as client:
        response = await client.post(SERVICE, json=library_body(hook))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
async def test_a_draft_order_about_another_patient_is_refused(make_client: Callable[..., Any], hook: str) -> None:
    body = library_body(hook)
    body["context"]["draftOrders"]["entry"][1]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["context.draftOrders.entry[1].resource.subject"]


async def test_a_draft_for_another_patient_is_refused_before_the_fhir_server_is_asked(
    make_client: Callable[..., Any], respx_mock: respx.MockRouter
) -> None:
    """Strict context first: with no prefetch, the service would query the EHR; a wrong draft costs no query."""
    server = "https://ehr.example.org/fhir"
    route = respx_mock.get(url__startswith=server).respond(200, json={"resourceType": "Bundle", "type": "searchset"})
    body = library_body("order-sign")
    body["context"]["draftOrders"]["entry"][1]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    del body["prefetch"]
    body["fhirServer"] = server
    body["fhirAuthorization"] = {"access_token": "t0ken-abc", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    settings = service_settings(fhir_allowed_bases=[server])
    async with make_client(settings=settings) as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["context.draftOrders.entry[1].resource.subject"]
    assert not route.called


async def test_a_selection_naming_nothing_in_draft_orders_is_refused(make_client: Callable[..., Any]) -> None:
    body = library_body("order-select")
    body["context"]["selections"] = ["MedicationRequest/not-in-the-bundle"]
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["context.selections[0]"]


@pytest.mark.parametrize("missing", ["selections", "draftOrders"])
async def test_order_select_without_its_required_context_is_refused(
    make_client: Callable[..., Any], missing: str
) -> None:
    body = library_body("order-select")
    del body["context"][missing]
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400


async def test_patient_view_is_not_served_by_the_order_service(make_client: Callable[..., Any]) -> None:
    body = neonate_body()
    body["hook"] = "patient-view"
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("hook", "extra"), [("order-sign", {}), ("order-select", {"selections": ["MedicationRequest/cef"]})]
)
async def test_neonatal_ceftriaxone_is_a_critical_card_with_a_link_and_an_audit_record(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, hook: str, extra: dict[str, Any]
) -> None:
    body = neonate_body(hook, **extra)
    async with make_client() as client:
        response = await client.post(SERVICE, json=body, headers={"Accept-Language": "fr-FR"})
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical"
    assert card["extension"]["calcinosis-cds"] == {"kind": "order-safety", "check": "neonatal-ceftriaxone-calcium",
                                                   "order": "MedicationRequest/cef"}
    assert card["suggestions"][0]["actions"] == [
        {"type": "delete", "description": "Supprimer cette prescription en brouillon",
         "resourceId": "MedicationRequest/cef"}]
    assert card["links"][0]["url"].startswith("https://testserver/assessment/")
    (record,) = [r for r in memory_store.calls if r.hook_instance == body["hookInstance"]]
    assert record.service_id == "calcinosis-medication-safety"
    assert record.hook == hook
    assert record.http_status == 200
    assert record.rules_fired == ["order:neonatal-ceftriaxone-calcium"]
    assert record.cards[0]["extension"]["calcinosis-cds"]["check"] == "neonatal-ceftriaxone-calcium"


async def test_feedback_on_an_order_card_is_recorded(make_client: Callable[..., Any],
                                                     memory_store: MemoryAuditStore) -> None:
    async with make_client() as client:
        card = (await client.post(SERVICE, json=neonate_body())).json()["cards"][0]
        feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                  "overrideReason": {"reason": {"code": "clinical-judgement",
                                                                "system": card["overrideReasons"][0]["system"]}},
                                  "outcomeTimestamp": "2026-11-21T09:00:00Z"}]}
        response = await client.post(f"{SERVICE}/feedback", json=feedback)
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0}
    (stored,) = memory_store.feedback
    assert stored.service_id == "calcinosis-medication-safety"
    assert stored.override_reason_code == "clinical-judgement"


async def test_the_card_link_opens_the_stored_order_cards(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        card = (await client.post(SERVICE, json=neonate_body(), headers={"Accept-Language": "fr"})).json()["cards"][0]
        page = await client.get(card["links"][0]["url"].removeprefix("https://testserver"))
    assert page.status_code == 200
    assert "Ceftriaxone chez un nouveau-né" in page.text


async def test_order_cards_are_counted_in_the_metrics(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        await client.post(SERVICE, json=neonate_body())
        metrics = (await client.get("/metrics")).text
    assert 'cds_cards_total{indicator="critical",kind="order-safety"} 1.0' in metrics
