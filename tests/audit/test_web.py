"""The service with a real store behind it: every answer is audited before it leaves, a store that cannot
write turns the answer into a 503, feedback joins its hook call, and no token or JWT reaches any table
(security brief §2.1, §3.4, §4.6 targets 3, 7 and 8). Both backends."""

from __future__ import annotations

import uuid
from typing import Any

from hooks.app import create_app
from hooks.audit.codec import call_from_document
from hooks.audit.factory import open_audit_log
from hooks.models import Card, CdsResponse
from hooks.registry import HookCall, HookOutcome, ServiceDefinition, ServiceRegistry
from tests.audit.conftest import TEST_KEY, dump_everything
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as settings_for_test

CANARY_TOKEN = "canary-access-token-6f1d2c9e8b7a"
CANARY_JWT = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJjYW5hcnkiLCJqdGkiOiJjYW5hcnktand0In0.Y2FuYXJ5LXNpZ25hdHVyZQ"
)
CARD_UUID = "5b0d0c36-7a55-4a3b-9d1c-6a4b3b1f0f01"


def stub_registry() -> ServiceRegistry:
    def handler(call: HookCall) -> HookOutcome:
        card = Card(uuid=CARD_UUID, summary="Consider a calcium x phosphate product", indicator="info",
                    source={"label": "stub"}, extension={"calcinosis-cds": {"kind": "work-up", "rule": "R1"}})
        return HookOutcome(CdsResponse(cards=[card]), rules_fired=["R1"], facts_used=[{"fact": "stub"}],
                           ruleset_version="9.9.9", ruleset_hash="ff" * 32)

    registry = ServiceRegistry()
    registry.register(ServiceDefinition(
        id="stub", hook="patient-view", title="t", description="d",
        prefetch={"patient": "Patient/{{context.patientId}}"}, essential_keys=frozenset({"patient"}),
        handler=handler,
    ))
    return registry


def request_body(patient: str = "p1", **extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": patient},
        "prefetch": {"patient": {"resourceType": "Patient", "id": patient}},
        **extra,
    }


def app_for(audit_dsn: str, **kwargs: Any) -> Any:
    settings = settings_for_test(audit_dsn=audit_dsn)
    return create_app(settings, registry=stub_registry(), clock=lambda: FIXED_NOW, **kwargs)


def read_log(audit_dsn: str) -> Any:
    log = open_audit_log(audit_dsn, TEST_KEY)
    log.open()
    return log


async def test_each_answer_is_audited_with_its_hook_instance(audit_dsn: str) -> None:
    bodies = [request_body(), request_body(), request_body(patient="p2")]
    async with running_client(app_for(audit_dsn)) as client:
        answers = [await client.post("/cds-services/stub", json=body) for body in bodies]
        missing = request_body()
        missing["prefetch"] = {}
        refused = await client.post("/cds-services/stub", json=missing)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert refused.status_code == 412
    log = read_log(audit_dsn)
    try:
        calls = {row["hook_instance"]: row for row in log.rows(kinds=["call"])}
        assert set(calls) == {b["hookInstance"] for b in [*bodies, missing]}
        record = call_from_document(calls[bodies[2]["hookInstance"]]["document"])
        assert record.patient_ref == "Patient/p2"
        assert record.user_ref == "Practitioner/1"
        assert [card["uuid"] for card in record.cards] == [CARD_UUID]
        assert record.rules_fired == ["R1"]
        assert record.ruleset_version == "9.9.9"
        assert record.input_digest
        assert record.latency_ms is not None
        assert calls[missing["hookInstance"]]["http_status"] == 412
        assert log.verify().ok
    finally:
        log.close()


async def test_no_token_or_jwt_reaches_any_table(audit_dsn: str) -> None:
    body = request_body(
        fhirServer="https://ehr.example.org/fhir",
        fhirAuthorization={"access_token": CANARY_TOKEN, "token_type": "Bearer", "expires_in": 300,
                           "scope": "patient/*.read", "subject": "calcinosis-cds"},
    )
    headers = {"Authorization": f"Bearer {CANARY_JWT}"}
    async with running_client(app_for(audit_dsn)) as client:
        answered = await client.post("/cds-services/stub", json=body, headers=headers)
        bad = dict(body, fhirAuthorization={"access_token": CANARY_TOKEN})  # invalid: rejected, still audited
        rejected = await client.post("/cds-services/stub", json=bad, headers=headers)
        fed_back = await client.post("/cds-services/stub/feedback", headers=headers, json={"feedback": [
            {"card": CARD_UUID, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T09:05:00Z",
             "overrideReason": {"userComment": "ok"}}]})
    assert (answered.status_code, rejected.status_code, fed_back.status_code) == (200, 400, 200)
    everything = dump_everything(audit_dsn)
    assert body["hookInstance"] in everything  # the dump really holds the rows
    assert CANARY_TOKEN not in everything
    assert CANARY_JWT not in everything
    assert CANARY_JWT.split(".")[1] not in everything  # not even the payload part


async def test_feedback_over_http_joins_the_hook_call(audit_dsn: str) -> None:
    body = request_body()
    item = {"card": CARD_UUID, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T09:05:00Z",
            "overrideReason": {"reason": {"system": "http://example.org/r", "code": "not-relevant"}}}
    async with running_client(app_for(audit_dsn)) as client:
        assert (await client.post("/cds-services/stub", json=body)).status_code == 200
        first = await client.post("/cds-services/stub/feedback", json={"feedback": [item]})
        # The same report again a minute later (a client retrying, a second click): nothing new.
        again = await client.post("/cds-services/stub/feedback",
                                  json={"feedback": [{**item, "outcomeTimestamp": "2026-11-21T09:04:00Z"}]})
    assert first.json() == {"stored": 1, "duplicates": 0}
    assert again.json() == {"stored": 0, "duplicates": 1}
    log = read_log(audit_dsn)
    try:
        (row,) = log.rows(kinds=["feedback"])
        assert row["hook_instance"] == body["hookInstance"]
        assert row["card_uuid"] == CARD_UUID
    finally:
        log.close()


async def test_an_answer_that_cannot_be_audited_is_not_sent(audit_dsn: str) -> None:
    async with running_client(app_for(audit_dsn)) as client:
        store = client._transport.app.state.runtime.audit  # type: ignore[attr-defined]
        # The database goes away: SQLite's connection is closed, PostgreSQL's server is unreachable.
        await store._run(store.log.close)
        if hasattr(store.log, "_dsn"):
            store.log._dsn = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"
        answer = await client.post("/cds-services/stub", json=request_body())
        ready = await client.get("/readyz")
    assert answer.status_code == 503
    assert "cards" not in answer.text
    assert ready.status_code == 503
