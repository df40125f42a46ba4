"""Audit rows as FHIR R4 resources and as auditor summaries (security brief §3.2, §3.5).

* ``audit_event``: one AuditEvent per row, following the IHE BALP patterns [S11]: ``type``
  audit-event-type#rest with subtype restful-interaction#operation and action E for a hook call (a POST that
  executes a service), agents client (DCM#110153), server (DCM#110152) and user (IRCP, requestor), the
  patient as an entity with type=1/role=1, the hookInstance as the BALP transaction entity, each FHIR
  search as a query entity (base64 parameters, never results), the JWT ``jti`` as agent.policy (BALP
  OAuth pattern). Outcome 0/4/8 by HTTP status 2xx-3xx/4xx/5xx. Feedback rows are "create" events; reads
  of the audit log itself are DCM#110101 "Audit Log Used".
* ``guidance_response``: the CDS-on-FHIR decision record [S13] for hook calls: hookInstance →
  requestIdentifier, service URL → moduleUri, patient → subject, time → occurrenceDateTime; cards become
  a contained RequestGroup (R4's RequestOrchestration) referenced from ``result``; rules fired, rule-set
  version and hash, code version and input digest go in contained Parameters (``outputParameters``);
  a failure reason goes in a contained OperationOutcome (``evaluationMessage``).

FHIR forbids empty strings, arrays and objects, and failure records (401, 404, 413, …) carry no hook,
rule set or digest: empty details and identifiers are left out rather than written as ``""``.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from hooks.audit.schema import StoredRow

__all__ = ["audit_event", "card_kind", "guidance_response"]

_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
_EXTENSION = "calcinosis-cds"
_UNATTRIBUTED = "(unattributed)"


def _document(row: StoredRow) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(row["document"])
    return document


def _prune(value: Any) -> Any:
    """Drop ``None``, ``""``, ``[]`` and ``{}`` everywhere: FHIR JSON must not contain them."""
    if isinstance(value, dict):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        return [item for item in (_prune(item) for item in value) if item not in (None, "", [], {})]
    return value


def _service_url(base_url: str, service_id: object, suffix: str = "") -> str:
    if not service_id:
        return f"{base_url}/cds-services"
    # The id comes from the request path: percent-encoded so that the URL stays a valid FHIR uri.
    return f"{base_url}/cds-services/{urllib.parse.quote(str(service_id), safe='')}{suffix}"


def _outcome(status: int | None) -> str:
    if status is None or status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _source(server_url: str) -> dict[str, Any]:
    return {
        "observer": {"display": "calcinosis-cds", "identifier": {"system": "urn:ietf:rfc:3986", "value": server_url}},
        "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
    }


def _agents(document: Mapping[str, Any], server_url: str) -> list[dict[str, Any]]:
    client: dict[str, Any] = {
        "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
        "requestor": False,
    }
    if document.get("iss"):
        client["who"] = {"identifier": {"system": "urn:ietf:rfc:3986", "value": document["iss"]}}
        if document.get("tenant"):
            client["who"]["display"] = f"tenant {document['tenant']}"
    elif document.get("http_status") == 401:
        client["who"] = {"display": "unauthenticated client (credentials refused)"}
    else:
        client["who"] = {"display": "unauthenticated client"}
    if document.get("jti"):
        client["policy"] = [f"urn:ietf:params:oauth:jti:{document['jti']}"]
    server = {
        "type": {"coding": [_coding(_DCM, "110152", "Destination Role ID")]},
        "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": server_url}},
        "requestor": False,
    }
    agents = [client, server]
    if document.get("user_ref"):
        agents.append({
            "type": {"coding": [_coding(_PARTICIPATION, "IRCP", "information recipient")]},
            "who": {"reference": document["user_ref"]},
            "requestor": True,
        })
    return agents


def _patient_entity(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": _coding(_ENTITY_TYPE, "1", "Person"),
        "role": _coding(_OBJECT_ROLE, "1", "Patient"),
    }


def _transaction_entity(hook_instance: str) -> dict[str, Any]:
    return {
        "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{hook_instance}"}},
        "type": _coding(_BALP_ENTITY, "XrequestId", "X-Request-Id"),
        "description": "CDS Hooks hookInstance",
    }


def _detail(kind: str, value: object) -> dict[str, str] | None:
    """One entity detail, or None when there is nothing to say (FHIR forbids ``valueString: ""``)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, list) and all(item is None for item in value):
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return {"type": kind, "valueString": text}


def _card_identifier(card: Mapping[str, Any]) -> dict[str, Any] | None:
    card_uuid = card.get("uuid")
    if not card_uuid:
        return None
    return {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{card_uuid}"}}


def _call_event(row: StoredRow, document: dict[str, Any], base_url: str) -> dict[str, Any]:
    server_url = _service_url(base_url, row["service_id"])
    entities: list[dict[str, Any]] = []
    if row["patient_ref"]:
        entities.append(_patient_entity(row["patient_ref"]))
    if row["hook_instance"]:
        entities.append(_transaction_entity(row["hook_instance"]))
    if document.get("encounter_ref"):
        entities.append(
            {"what": {"reference": document["encounter_ref"]}, "type": _coding(_ENTITY_TYPE, "2", "System Object")}
        )
    for query in document.get("queries", ()):
        entities.append({
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(_OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode(str(query["query"]).encode()).decode(),
            "detail": [_detail("outcome", f"{query['outcome']} status={query['status']} count={query['count']}")],
        })
    decision = [
        _detail("hook", row["hook"]),
        _detail("rulesFired", document.get("rules_fired", [])),
        _detail("rulesetVersion", document.get("ruleset_version") or ""),
        _detail("rulesetHash", document.get("ruleset_hash") or ""),
        _detail("codeVersion", document.get("code_version") or ""),
        _detail("inputDigest", document.get("input_digest") or ""),
        _detail("prefetch", document.get("prefetch", [])),
    ]
    entities.append({
        "what": {"identifier": {"value": row["record_id"]}},
        "type": _coding(_ENTITY_TYPE, "2", "System Object"),
        "name": "CDS Hooks response",
        "detail": decision,
    })
    for card in document.get("cards", ()):
        entities.append({
            "what": _card_identifier(card),
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "name": "CDS Hooks card",
            "description": str(card.get("summary") or ""),
            "detail": [_detail("indicator", str(card.get("indicator", ""))), _detail("kind", card_kind(card))],
        })
    event: dict[str, Any] = {
        "type": _coding(_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [_coding(_INTERACTION, "operation", "operation")],
        "action": "E",
        "period": {"start": document["received_at"]},
        "recorded": document.get("responded_at") or document["received_at"],
        "outcome": _outcome(row["http_status"]),
        "agent": _agents(document, server_url),
        "source": _source(server_url),
        "entity": entities,
    }
    if document.get("responded_at"):
        event["period"]["end"] = document["responded_at"]
    if document.get("reason_class"):
        event["outcomeDesc"] = f"HTTP {row['http_status']}: {document['reason_class']}"
    return event


def _feedback_event(row: StoredRow, document: dict[str, Any], base_url: str) -> dict[str, Any]:
    server_url = _service_url(base_url, row["service_id"], "/feedback")
    entities = []
    if row["patient_ref"]:
        entities.append(_patient_entity(row["patient_ref"]))
    if row["hook_instance"]:
        entities.append(_transaction_entity(row["hook_instance"]))
    entities.append({
        "what": _card_identifier({"uuid": document.get("card_uuid")}),
        "type": _coding(_ENTITY_TYPE, "2", "System Object"),
        "name": "CDS Hooks card feedback",
        "detail": [
            _detail("outcome", document["outcome"]),
            _detail("outcomeTimestamp", document["outcome_timestamp"]),
            _detail("acceptedSuggestions", document.get("accepted_suggestions", [])),
            _detail("overrideReason", [document.get("override_reason_system"), document.get("override_reason_code")]),
            _detail("link", document.get("link", "")),
        ],
    })
    return {
        "type": _coding(_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [_coding(_INTERACTION, "create", "create")],
        "action": "C",
        "recorded": document["received_at"],
        "outcome": "0",
        "agent": _agents(document, server_url),
        "source": _source(server_url),
        "entity": entities,
    }


def _access_event(row: StoredRow, document: dict[str, Any], base_url: str) -> dict[str, Any]:
    user = f"{document.get('os_user')}@{document.get('host')}"
    if document.get("db_user"):
        # What the database authenticated first; the OS user is only what the process claimed.
        user = f"database user {document['db_user']} from {document.get('client_addr')} (OS user {user})"
    entities: list[dict[str, Any]] = [{
        "what": {"display": "calcinosis-cds audit log"},
        "type": _coding(_ENTITY_TYPE, "2", "System Object"),
        "role": _coding(_OBJECT_ROLE, "24", "Query"),
        "query": base64.b64encode(orjson.dumps(document.get("filters", {}), option=orjson.OPT_SORT_KEYS)).decode(),
        "detail": [_detail("action", document.get("action", "")), _detail("records", document.get("records", 0))],
    }]
    if row["patient_ref"]:
        entities.insert(0, _patient_entity(row["patient_ref"]))
    return {
        "type": _coding(_DCM, "110101", "Audit Log Used"),
        "action": "R" if document.get("action") != "export" else "E",
        "recorded": document["at"],
        "outcome": "0",
        "agent": [{
            "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
            "who": {"display": user},
            "requestor": True,
        }],
        "source": _source(f"{base_url}/audit-cli"),
        "entity": entities,
    }


def audit_event(row: StoredRow, base_url: str) -> dict[str, Any]:
    """FHIR R4 AuditEvent (JSON) for one stored row."""
    document = _document(row)
    builders = {"call": _call_event, "feedback": _feedback_event, "access": _access_event}
    event = builders[row["kind"]](row, document, base_url)
    resource: dict[str, Any] = _prune({"resourceType": "AuditEvent", "id": _fhir_id(row["record_id"]), **event})
    return resource


def _fhir_id(record_id: object) -> str | None:
    # FHIR ids are [A-Za-z0-9-.]{1,64}: uuids are; anything else is kept in the identifier only.
    text = str(record_id)
    return text if 0 < len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "-.") for c in text) else None


def guidance_response(row: StoredRow, base_url: str) -> dict[str, Any] | None:
    """FHIR R4 GuidanceResponse (JSON) for a hook-call row; None for feedback and access rows."""
    if row["kind"] != "call":
        return None
    document = _document(row)
    status = row["http_status"]
    resource: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": _fhir_id(row["record_id"]),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{row['record_id']}"}],
        "moduleUri": _service_url(base_url, row["service_id"]),
        # 412 = "could not obtain the data it needs": exactly what data-required says.
        "status": "success" if status == 200 else "data-required" if status == 412 else "failure",
        "occurrenceDateTime": document["received_at"],
        "performer": {"display": f"calcinosis-cds {document.get('code_version') or ''}".strip()},
        "contained": [],
    }
    if row["hook_instance"]:
        resource["requestIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{row['hook_instance']}"}
    if row["patient_ref"]:
        resource["subject"] = {"reference": row["patient_ref"]}
    if document.get("encounter_ref"):
        resource["encounter"] = {"reference": document["encounter_ref"]}
    parameters: list[dict[str, Any]] = [
        {"name": "ruleFired", "valueString": rule} for rule in document.get("rules_fired", ())
    ]
    for name, key in (("rulesetVersion", "ruleset_version"), ("rulesetHash", "ruleset_hash"),
                      ("codeVersion", "code_version"), ("inputDigest", "input_digest")):
        if document.get(key):
            parameters.append({"name": name, "valueString": str(document[key])})
    parameters.append({"name": "httpStatus", "valueInteger": status})
    resource["contained"].append({"resourceType": "Parameters", "id": "output", "parameter": parameters})
    resource["outputParameters"] = {"reference": "#output"}
    cards = document.get("cards", [])
    if cards:
        actions = []
        for card in cards:
            action: dict[str, Any] = {
                "id": _fhir_id(card["uuid"]) if card.get("uuid") else None,
                "title": str(card.get("summary", "")),
                "priority": "urgent" if card.get("indicator") == "critical" else "routine",
                "code": [{"text": f"indicator {card.get('indicator')}; kind {card_kind(card)}"}],
            }
            if card.get("detail"):
                action["description"] = str(card["detail"])
            source = card.get("source") or {}
            artifact: dict[str, Any] = {"type": "documentation", "label": str(source.get("label") or "")}
            if source.get("url"):
                artifact["url"] = source["url"]
            action["documentation"] = [artifact]
            actions.append({key: value for key, value in action.items() if value is not None})
        group: dict[str, Any] = {
            "resourceType": "RequestGroup", "id": "cards", "status": "active", "intent": "proposal", "action": actions,
        }
        if row["patient_ref"]:
            group["subject"] = {"reference": row["patient_ref"]}
        resource["contained"].append(group)
        resource["result"] = {"reference": "#cards"}
    if document.get("reason_class") or status != 200:
        resource["contained"].append({
            "resourceType": "OperationOutcome",
            "id": "outcome",
            "issue": [{
                "severity": "error" if status >= 400 else "information",
                "code": "processing",
                "diagnostics": f"HTTP {status}: {document.get('reason_class') or 'no reason class'}",
            }],
        })
        resource["evaluationMessage"] = [{"reference": "#outcome"}]
    pruned: dict[str, Any] = _prune(resource)
    return pruned


def card_kind(card: Mapping[str, Any]) -> str:
    extension = card.get("extension")
    ours = extension.get(_EXTENSION) if isinstance(extension, Mapping) else None
    kind = ours.get("kind") if isinstance(ours, Mapping) else None
    return str(kind) if kind else "(none)"
