"""CDS Hooks 2.0 protocol: discovery, every example request, feedback, health (issue: service foundation)."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from hooks.audit import MemoryAuditStore
from tests.conftest import load_fixture
from tests.fhir_builders import prefetch_for
from tests.hooks.engine.conftest import fixture_resources

SERVICE = "/cds-services/calcinosis-assessment"
EXAMPLES = "cds-hooks-examples"


def request_body(prefetch: dict[str, Any] | None = None, *, patient_id: str = "p1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def is_operation_outcome(payload: dict[str, Any]) -> bool:
    return payload.get("resourceType") == "OperationOutcome" and bool(payload.get("issue"))


# --------------------------------------------------------------------------- discovery


async def test_discovery_lists_the_service_with_its_prefetch_templates(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        response = await client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    service = next(s for s in services if s["id"] == "calcinosis-assessment")
    assert service["hook"] == "patient-view"
    assert service["title"]
    assert service["description"]
    prefetch = service["prefetch"]
    assert set(prefetch) == {"patient", "conditions", "observations", "medications", "procedures"}
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    assert prefetch["conditions"] == "Condition?patient={{context.patientId}}&_count=100"
    assert prefetch["medications"] == "MedicationRequest?patient={{context.patientId}}&_count=100"
    assert prefetch["procedures"] == "Procedure?patient={{context.patientId}}&_count=100"
    query = prefetch["observations"]
    assert query.startswith("Observation?patient={{context.patientId}}&code=")
    assert query.endswith("&_sort=-date&_count=100")  # newest first: the completeness rule can stop early
    codes = query.split("&code=", 1)[1].split("&", 1)[0].split(",")
    # Bare codes keep the query under 2,048 characters once encoded (gateways); the mapping reads LOINC only.
    assert len(query) < 1024
    assert all("|" not in c for c in codes)
    loinc = set(codes)
    # Generated from the terminology tables: the analytes the engine reads, in mass and molar units.
    from fhir_mappings.terminology import observation_loinc_codes

    assert codes == list(observation_loinc_codes())
    assert {"17861-6", "2000-8", "2777-1", "14879-1", "2731-8", "98979-8", "14682-9"} <= loinc
    # CDS Hooks 2.0 tokens only: root-level context fields, no today() (3.0 ballot).
    for template in prefetch.values():
        for token in re.findall(r"\{\{(.*?)\}\}", template):
            assert token == "context.patientId"
    assert "null" not in response.text


# --------------------------------------------------------------------------- service calls


async def test_full_prefetch_returns_cards(make_client: Callable[..., Any]) -> None:
    pid, resources = fixture_resources("metastatic_ckd4_hyperparathyroidism.json")
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch_for(resources), patient_id=pid))
    assert response.status_code == 200
    kinds = [c["extension"]["calcinosis-cds"]["kind"] for c in response.json()["cards"]]
    assert "subtype-assessment" in kinds


async def test_silent_patient_gets_empty_cards(make_client: Callable[..., Any]) -> None:
    pid, resources = fixture_resources("silent_ckd3_normal_labs.json")
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch_for(resources), patient_id=pid))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


async def test_accept_language_selects_french(make_client: Callable[..., Any]) -> None:
    pid, resources = fixture_resources("seed000_heroin_injection_dystrophic.json")
    body = request_body(prefetch_for(resources), patient_id=pid)
    async with make_client() as client:
        french = await client.post(SERVICE, json=body, headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
        english = await client.post(SERVICE, json=body, headers={"Accept-Language": "en-GB"})
    assert "dystrophique" in french.json()["cards"][0]["summary"]
    assert "dystrophic" in english.json()["cards"][0]["summary"]


async def test_null_prefetch_means_no_data_and_no_query(make_client: Callable[..., Any]) -> None:
    # Spec: null = the EHR has no data; the service does not query again (there is no fhirServer anyway).
    prefetch = {
        "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"},
        "conditions": None,
        "observations": None,
        "medications": None,
    }
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


async def test_prefetch_about_another_patient_is_refused(make_client: Callable[..., Any]) -> None:
    _, resources = fixture_resources("metastatic_ckd4_hyperparathyroidism.json")
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch_for(resources), patient_id="someone-else"))
    assert response.status_code == 400
    assert is_operation_outcome(response.json())


async def test_missing_prefetch_without_fhir_server_is_412_naming_the_key(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body())
    assert response.status_code == 412
    payload = response.json()
    assert is_operation_outcome(payload)
    assert "'conditions'" in payload["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("example", "status"),
    [
        # Our keys are missing and the example fhirServer is not on the allow-list: data unobtainable.
        ("spec-2.0.1/service-request-patient-view.json", 412),
        ("ahrq-cql-services/null_prefetch_values_invocation.R4.json", 412),
        ("ahrq-cql-services/missing_prefetch_keys_invocation.R4.json", 412),
        # patient-view requires context.patientId; this example omits it.
        ("spec-2.0.1/request-with-extension.json", 400),
        # calcinosis-assessment serves patient-view only: other hooks are refused, not mis-answered.
        ("inferno-crd-test-kit/order_select_hook_request.json", 400),
        ("inferno-crd-test-kit/order_sign_hook_request.json", 400),
        ("inferno-crd-test-kit/encounter_discharge_hook_request.json", 400),
    ],
)
async def test_every_spec_example_request(make_client: Callable[..., Any], example: str, status: int) -> None:
    body = load_fixture(f"{EXAMPLES}/{example}")
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == status
    assert is_operation_outcome(response.json())
    assert "some-opaque-fhir-access-token" not in response.text


async def test_spec_example_with_our_prefetch_keys_is_answered(make_client: Callable[..., Any]) -> None:
    # The spec's patient-view request, with its Patient under our key and the other keys null (no data).
    body = load_fixture(f"{EXAMPLES}/spec-2.0.1/service-request-patient-view.json")
    body["prefetch"] = {
        "patient": body["prefetch"]["patientToGreet"],
        "conditions": None,
        "observations": None,
        "medications": None,
    }
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


@pytest.mark.parametrize(
    "context_file",
    [
        "hook-library-1.0.1/patient-view-context-1-examples.json",
        "hook-library-1.0.1/patient-view-context-2-examples.json",
    ],
)
async def test_hook_library_patient_view_contexts_are_accepted(
    make_client: Callable[..., Any], context_file: str
) -> None:
    context = load_fixture(f"{EXAMPLES}/{context_file}")["context"]
    body = request_body(
        {
            "patient": {"resourceType": "Patient", "id": context["patientId"]},
            "conditions": None,
            "observations": None,
            "medications": None,
        }
    )
    body["context"] = context
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 200


# --------------------------------------------------------------------------- feedback


@pytest.mark.parametrize(
    "example",
    [
        "spec-2.0.1/feedback-accepted.json",
        "spec-2.0.1/feedback-overridden-no-reason.json",
        "spec-2.0.1/feedback-overridden-with-reason.json",
        "ahrq-cql-services/feedback.json",
    ],
)
async def test_feedback_examples_are_recorded_and_repeats_accepted(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, example: str
) -> None:
    body = load_fixture(f"{EXAMPLES}/{example}")
    async with make_client() as client:
        first = await client.post(f"{SERVICE}/feedback", json=body)
        again = await client.post(f"{SERVICE}/feedback", json=body)
    assert first.status_code == 200
    assert again.status_code == 200
    assert first.json() == {"stored": len(body["feedback"]), "duplicates": 0}
    assert again.json() == {"stored": 0, "duplicates": len(body["feedback"])}
    assert len(memory_store.feedback) == len(body["feedback"])


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda f: f.pop("acceptedSuggestions"), "acceptedSuggestions"),
        (lambda f: f.pop("outcomeTimestamp"), "outcomeTimestamp"),
        (lambda f: f.update(outcome="ignored"), "outcome"),
        (lambda f: f.update(outcomeTimestamp="2021-12-11T10:05:31"), "outcomeTimestamp"),
    ],
    ids=["accepted-without-suggestions", "no-timestamp", "bad-outcome", "timestamp-without-zone"],
)
async def test_invalid_feedback_is_400(
    make_client: Callable[..., Any], mutate: Callable[[dict[str, Any]], Any], fragment: str
) -> None:
    body = copy.deepcopy(load_fixture(f"{EXAMPLES}/spec-2.0.1/feedback-accepted.json"))
    mutate(body["feedback"][0])
    async with make_client() as client:
        response = await client.post(f"{SERVICE}/feedback", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["issue"][0]["diagnostics"]


async def test_feedback_for_unknown_service_is_404(make_client: Callable[..., Any]) -> None:
    body = load_fixture(f"{EXAMPLES}/spec-2.0.1/feedback-accepted.json")
    async with make_client() as client:
        response = await client.post("/cds-services/nope/feedback", json=body)
    assert response.status_code == 404


# --------------------------------------------------------------------------- health


async def test_health_endpoints(make_client: Callable[..., Any], memory_store: MemoryAuditStore) -> None:
    async with make_client() as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/readyz")).status_code == 200
        memory_store.fail_appends = True
        not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert is_operation_outcome(not_ready.json())


async def test_unauditable_response_is_not_sent(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    pid, resources = fixture_resources("metastatic_ckd4_hyperparathyroidism.json")
    memory_store.fail_appends = True
    async with make_client() as client:
        response = await client.post(SERVICE, json=request_body(prefetch_for(resources), patient_id=pid))
    assert response.status_code == 503
    assert "cards" not in response.text


async def test_every_call_is_audited_with_what_was_shown(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    pid, resources = fixture_resources("calciphylaxis_dialysis_warfarin.json")
    body = request_body(prefetch_for(resources), patient_id=pid)
    async with make_client() as client:
        ok = await client.post(SERVICE, json=body)
        bad = await client.post(SERVICE, json={"hook": "patient-view"})
    assert ok.status_code == 200
    assert bad.status_code == 400
    call, failure = memory_store.calls
    assert call.hook_instance == body["hookInstance"]
    assert call.patient_ref == f"Patient/{pid}"
    # What was shown, exactly, but for the assessment links' token (a credential: never in the audit trail).
    sent = ok.json()["cards"]
    assert call.cards == [{**card, "links": [{**link, "url": re.sub(r"&token=[^&]+", "", link["url"])}
                                             for link in card["links"]]} for card in sent]
    assert all("token=" in card["links"][0]["url"] for card in sent)
    assert "token=" not in str(call.cards)
    assert call.assessment is not None
    assert call.assessment["subtype"] == "calciphylaxis"
    assert "R39" in call.rules_fired
    assert "flag:suspected-calciphylaxis" in call.rules_fired
    assert call.ruleset_version
    assert call.ruleset_hash
    assert call.input_digest
    assert {p.key: p.received for p in call.prefetch} == {
        "patient": "present",
        "conditions": "present",
        "observations": "present",
        "medications": "present",
        "procedures": "missing",
    }
    assert any(f.get("reference") == "Observation/cal-p" for f in call.facts_used)
    assert failure.http_status == 400
    assert failure.reason_class == "invalid-request"
    assert failure.cards == []
