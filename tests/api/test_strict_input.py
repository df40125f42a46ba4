"""Strict input at the door (issue 16 items 2, 3 and 8): FHIR instants in feedback, JSON types as the spec
types them, FHIR ids in the context. Every refusal is a 400 OperationOutcome with an audit row, never a 500.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from hooks.audit import MemoryAuditStore
from tests.conftest import load_fixture

SERVICE = "/cds-services/calcinosis-assessment"
ACCEPTED = "cds-hooks-examples/spec-2.0.1/feedback-accepted.json"


def feedback_with(timestamp: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(load_fixture(ACCEPTED))
    body["feedback"][0]["outcomeTimestamp"] = timestamp
    return body


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59-00:01",  # past year 9999 in UTC: OverflowError in dedupe_key, a 500 before
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "0",  # read as 1970 before
        5,  # read as 1970 before
        "1970-01-01T00:00:05Z",  # a valid instant, outside the window
        "2026-11-23T09:00:00Z",  # two days after the injected clock: in the future
        "2021-12-11T10:05:31",  # no zone: not an instant
        "2021-12-11",  # a date, not an instant
        "2021-02-30T10:05:31Z",  # no such day
        "2021-12-11T10:05:31+15:00",  # no such offset
        " 2021-12-11T10:05:31Z",
        "2021-12-11t10:05:31z",
        1639217131.0,
        True,
        None,
        {"value": "2021-12-11T10:05:31Z"},
    ],
)
async def test_feedback_timestamps_must_be_sane_fhir_instants(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, timestamp: Any
) -> None:
    async with make_client() as client:
        response = await client.post(f"{SERVICE}/feedback", json=feedback_with(timestamp))
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "outcomeTimestamp" in response.json()["issue"][0]["diagnostics"]
    assert memory_store.feedback == []
    assert [(r.http_status, r.reason_class) for r in memory_store.calls] == [(400, "feedback:invalid-request")]


@pytest.mark.parametrize(
    "timestamp",
    ["2021-12-11T10:05:31Z", "2026-11-21T10:05:31.123456789+14:00", "2026-11-21T08:59:59-00:00",
     "2000-01-01T00:00:00Z"],
)
async def test_feedback_timestamps_that_are_fhir_instants_are_stored(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, timestamp: str
) -> None:
    async with make_client() as client:
        response = await client.post(f"{SERVICE}/feedback", json=feedback_with(timestamp))
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0}


def hook_call(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/u1", "patientId": "p1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}, "conditions": None,
                     "observations": None, "medications": None},
    }
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("context.patientId", "."),
        ("context.patientId", ".."),
        ("context.patientId", "x" * 65),
        ("context.patientId", "p1`](javascript:x)"),
        ("context.patientId", 5),
        ("context.encounterId", ".."),
        ("context.userId", "Practitioner/.."),
        ("context.userId", "Practitioner/."),
        ("context.userId", "Practitioner/" + "u" * 65),
        ("hook", 5),
        ("hookInstance", 12345),
        ("fhirServer", 5),
        ("prefetch", "not an object"),
    ],
)
async def test_request_fields_are_refused_when_the_spec_types_them_otherwise(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, field: str, value: Any
) -> None:
    body = hook_call(**{field: value})
    if field.startswith("context."):
        # No prefetch: what the id would do is decided at the door (400), not by a 412 for missing data.
        del body["prefetch"]
    async with make_client() as client:
        response = await client.post(SERVICE, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert [r.http_status for r in memory_store.calls] == [400]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fhirAuthorization", {"access_token": "abc", "token_type": "Bearer", "expires_in": "300",
                               "scope": "patient/*.read", "subject": "cds"}),
        ("fhirAuthorization", {"access_token": "abc", "token_type": "Bearer", "expires_in": 300.5,
                               "scope": "patient/*.read", "subject": "cds"}),
    ],
)
async def test_fhir_authorization_numbers_are_json_numbers(
    make_client: Callable[..., Any], field: str, value: Any
) -> None:
    async with make_client() as client:
        response = await client.post(SERVICE, json=hook_call(fhirServer="https://ehr.example.org/fhir",
                                                             **{field: value}))
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [("card", 12345), ("outcome", ["accepted"]), ("acceptedSuggestions", [{"id": 7}])],
)
async def test_feedback_fields_keep_their_json_types(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore, field: str, value: Any
) -> None:
    body = feedback_with("2021-12-11T10:05:31Z")
    body["feedback"][0][field] = value
    async with make_client() as client:
        response = await client.post(f"{SERVICE}/feedback", json=body)
    assert response.status_code == 400
    assert memory_store.feedback == []
