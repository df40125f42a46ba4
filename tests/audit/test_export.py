"""Exports are valid FHIR R4 (checked with fhir.resources R4B) and carry what an auditor looks for
(security brief §3.2: BALP AuditEvent patterns, CDS-on-FHIR GuidanceResponse mapping). Both backends."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import orjson
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.guidanceresponse import GuidanceResponse

from hooks.audit import HookCallRecord
from hooks.audit.export import audit_event, guidance_response
from hooks.audit.sql import AuditLog
from hooks.audit.stats import card_stats
from tests.audit.conftest import T0, call_record, card, feedback

BASE = "https://cds.example.org"


def populated(log: AuditLog) -> dict[str, Any]:
    ok = call_record()
    failed = call_record(http_status=412, reason_class="data-unobtainable", cards=[], rules_fired=[],
                         responded_at=None)
    broken = call_record(http_status=503, reason_class="audit-unavailable", cards=[], user_ref=None, iss=None,
                         tenant=None, jti=None, hook_instance=None, patient_ref=None, encounter_ref=None)
    for record in (ok, failed, broken):
        log.append_call(record)
    log.append_feedback([feedback(ok), feedback(ok, card_index=1, outcome="accepted", accepted_suggestions=["s"])])
    log.append_access("export", {"patient": "Patient/123", "format": "auditevent"})
    return {"ok": ok, "failed": failed, "broken": broken}


def test_every_row_exports_as_a_valid_audit_event(log: AuditLog) -> None:
    records = populated(log)
    events = {row["record_id"]: AuditEvent.model_validate(audit_event(row, BASE)) for row in log.rows()}
    assert len(events) == 6

    ok = events[records["ok"].record_id]
    assert (ok.type.code, ok.subtype[0].code, ok.action, ok.outcome) == ("rest", "operation", "E", "0")
    patient = [e for e in ok.entity if e.role and e.role.code == "1"]
    assert len(patient) == 1
    assert patient[0].what.reference == "Patient/123"
    assert patient[0].type.code == "1"
    roles = {agent.type.coding[0].code: agent for agent in ok.agent}
    assert set(roles) == {"110153", "110152", "IRCP"}
    assert roles["IRCP"].requestor is True
    assert roles["IRCP"].who.reference == "Practitioner/17"
    assert roles["110153"].who.identifier.value == "https://ehr.example.org"
    assert roles["110153"].policy == [f"urn:ietf:params:oauth:jti:{records['ok'].jti}"]
    queries = [e for e in ok.entity if e.role and e.role.code == "24"]
    # fhir.resources decodes base64Binary; the raw export carries the base64 text (BALP entity[query]).
    assert queries[0].query == records["ok"].queries[0].query.encode()
    raw = audit_event(next(log.rows(kinds=["call"])), BASE)
    raw_queries = [e["query"] for e in raw["entity"] if "query" in e]
    assert base64.b64decode(raw_queries[0]).decode() == records["ok"].queries[0].query
    assert {e.description for e in ok.entity if e.name == "CDS Hooks card"} == {
        c["summary"] for c in records["ok"].cards}

    assert events[records["failed"].record_id].outcome == "4"
    assert events[records["broken"].record_id].outcome == "8"
    assert "audit-unavailable" in (events[records["broken"].record_id].outcomeDesc or "")
    kinds = sorted(event.type.code for event in events.values())
    assert kinds == ["110101", "rest", "rest", "rest", "rest", "rest"]  # one "Audit Log Used"


def test_hook_calls_export_as_valid_guidance_responses(log: AuditLog) -> None:
    records = populated(log)
    exported = [guidance_response(row, BASE) for row in log.rows()]
    responses = {r["id"]: GuidanceResponse.model_validate(r) for r in exported if r is not None}
    assert len(responses) == 3  # feedback and access rows have no GuidanceResponse

    ok = responses[records["ok"].record_id]
    assert ok.status == "success"
    assert ok.requestIdentifier.value == f"urn:uuid:{records['ok'].hook_instance}"
    assert ok.moduleUri == f"{BASE}/cds-services/calcinosis-assessment"
    assert ok.subject.reference == "Patient/123"
    assert ok.occurrenceDateTime is not None
    contained = {resource.id: resource for resource in ok.contained}
    rules = [p.valueString for p in contained["output"].parameter if p.name == "ruleFired"]
    assert rules == ["C1", "R2"]
    assert [a.title for a in contained["cards"].action] == [c["summary"] for c in records["ok"].cards]

    assert responses[records["failed"].record_id].status == "data-required"
    failed = responses[records["broken"].record_id]
    assert failed.status == "failure"
    assert failed.evaluationMessage[0].reference == "#outcome"


def test_stats_count_shown_accepted_and_overridden_per_rule_and_kind(log: AuditLog) -> None:
    first = call_record(cards=[card("C1", "subtype", suggestions=("s",)), card("R2", "red-flag")])
    second = call_record(cards=[card("C1", "subtype", suggestions=("s",))])
    third = call_record(cards=[card("R2", "red-flag")])
    silent_rule = call_record(cards=[{"uuid": "u-1", "summary": "s", "indicator": "info"}], rules_fired=["X9"])
    for record in (first, second, third, silent_rule):
        log.append_call(record)
    log.append_feedback([
        feedback(first, 0),
        feedback(second, 0, outcome="accepted", accepted_suggestions=["s"]),
        feedback(first, 1),  # red flags can only be dismissed
        feedback(third, 0),
    ])
    by_rule, by_kind = card_stats(log.rows(kinds=["call"]), log.rows(kinds=["feedback"]))
    assert dict(by_rule.shown) == {"C1": 2, "R2": 2, "X9": 1}
    assert (by_rule.accepted["C1"], by_rule.overridden["C1"], by_rule.overridden["R2"]) == (1, 1, 2)
    assert dict(by_kind.shown) == {"subtype": 2, "red-flag": 2, "(none)": 1}
    table = by_rule.table("rule id")
    assert "| C1 | 2 | 2 | 1 | 1 | 50% |" in table
    # Two dismissals of a card without suggestions are not a "100 % override rate".
    assert "| R2 | 2 | 0 | 0 | 2 | n/a (no suggestions) |" in table
    assert by_kind.override_rate("red-flag") == "n/a (no suggestions)"
    assert by_kind.override_rate("subtype") == "50%"


def test_a_kind_with_suggestions_but_no_feedback_yet_has_no_rate(log: AuditLog) -> None:
    log.append_call(call_record(cards=[card("C1", "subtype", suggestions=("s",))]))
    by_rule, _ = card_stats(log.rows(kinds=["call"]), log.rows(kinds=["feedback"]))
    assert by_rule.override_rate("C1") == "—"


def test_engine_red_flag_and_risk_cards_count_under_their_ids(log: AuditLog) -> None:
    flagged = {"uuid": "f-1", "summary": "s", "indicator": "warning",
               "extension": {"calcinosis-cds": {"kind": "red-flag", "flag": "RF-CALCIPHYLAXIS"}}}
    risky = {"uuid": "r-1", "summary": "s", "indicator": "info",
             "extension": {"calcinosis-cds": {"kind": "risk", "risk": "RISK-CAXP"}}}
    log.append_call(call_record(cards=[flagged, risky], rules_fired=["A", "B"]))
    by_rule, _ = card_stats(log.rows(kinds=["call"]), log.rows(kinds=["feedback"]))
    assert dict(by_rule.shown) == {"RF-CALCIPHYLAXIS": 1, "RISK-CAXP": 1}


# --------------------------------------------------------------------------- failure records (review finding 5)


def app_failure(status: int, reason: str, **extra: Any) -> Any:
    """Shaped like what hooks/app.py writes when the request fails before the hook is known."""
    return HookCallRecord(record_id=str(uuid.uuid4()), received_at=T0,
                          responded_at=T0 + timedelta(milliseconds=3), latency_ms=2.5,
                          service_id=extra.pop("service_id", "calcinosis-assessment"), code_version="0.1.0",
                          http_status=status, reason_class=reason, **extra)


def no_empty_values(value: Any) -> bool:
    if isinstance(value, dict):
        return all(item not in ("", [], {}, None) and no_empty_values(item) for item in value.values())
    if isinstance(value, list):
        return all(item not in ("", [], {}, None) and no_empty_values(item) for item in value)
    return True


def test_failure_records_export_as_valid_fhir(log: AuditLog) -> None:
    records = [app_failure(401, "bad-signature"), app_failure(404, "not-found", service_id="nope\x00 x"),
               app_failure(413, "too-large"), app_failure(415, "unsupported-media-type"),
               app_failure(429, "rate-limited"), app_failure(400, "invalid-request", hook="patient-view")]
    for record in records:
        log.append_call(record)
    for row in log.rows():
        event = audit_event(row, BASE)
        assert no_empty_values(event), event
        assert '"valueString":""' not in str(event).replace(" ", "")
        AuditEvent.model_validate(event)
        response = guidance_response(row, BASE)
        assert response is not None
        assert no_empty_values(response), response
        GuidanceResponse.model_validate(response)
    unauthenticated = AuditEvent.model_validate(audit_event(next(log.rows()), BASE))
    assert unauthenticated.outcome == "4"
    assert "bad-signature" in (unauthenticated.outcomeDesc or "")
    assert "credentials refused" in (unauthenticated.agent[0].who.display or "")


def test_cards_without_uuid_or_source_label_export_as_valid_fhir(log: AuditLog) -> None:
    bare = {"summary": "Consider work-up", "indicator": "info", "source": {"label": ""}}
    log.append_call(call_record(cards=[bare, {"uuid": None, "summary": "", "indicator": "info", "source": {}}]))
    (row,) = log.rows()
    event = audit_event(row, BASE)
    assert "urn:uuid:None" not in orjson.dumps(event).decode()
    assert no_empty_values(event)
    AuditEvent.model_validate(event)
    response = guidance_response(row, BASE)
    assert response is not None
    assert "None" not in orjson.dumps(response).decode()
    assert no_empty_values(response)
    GuidanceResponse.model_validate(response)
