"""What the audit trail records for each hook call and each feedback item.

Content follows the security brief §3.3 (CRDMetricData fields, BALP minimal AuditEvent, FDA criterion 4):
who called, about which patient, on what data, under which rule-set version, what was shown, and what
the clinician did with it. Never an access token or a JWT: only ``iss``, ``tenant``, ``jti``, ``kid``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

__all__ = ["FeedbackRecord", "FhirQuery", "HookCallRecord", "PrefetchKeyState"]

PrefetchStateName = Literal["present", "null", "operation-outcome", "missing"]
TokenUse = Literal["used", "not-used", "rejected", "none"]


@dataclass(slots=True)
class PrefetchKeyState:
    key: str
    received: PrefetchStateName
    resources: int = 0
    # True when the service had to query fhirServer for this key itself.
    fetched: bool = False
    obtained: bool = True
    # Why a list was accepted before its last page (issue 11 completeness rule); None when every page was read.
    complete_by: str | None = None


@dataclass(slots=True)
class FhirQuery:
    key: str
    resource_type: str
    # Relative query (e.g. "Observation?patient=123&code=..."): the search parameters, never the results
    # (BALP minimal) and never the token.
    query: str
    status: int | None
    count: int
    ms: float
    outcome: Literal["ok", "timeout", "error", "rejected", "circuit-open", "not-allowed", "too-large",
                     "bad-content-type", "deadline"]


@dataclass(slots=True)
class HookCallRecord:
    record_id: str
    received_at: datetime
    responded_at: datetime | None = None
    latency_ms: float | None = None
    service_id: str | None = None
    hook: str | None = None
    hook_instance: str | None = None
    # Caller, from the verified JWT (all safe to log per the CDS Hooks best practices).
    iss: str | None = None
    tenant: str | None = None
    jti: str | None = None
    kid: str | None = None
    alg: str | None = None
    user_ref: str | None = None
    patient_ref: str | None = None
    encounter_ref: str | None = None
    fhir_server: str | None = None
    prefetch: list[PrefetchKeyState] = field(default_factory=list)
    queries: list[FhirQuery] = field(default_factory=list)
    token_use: TokenUse = "none"
    # SHA-256 of the canonical JSON of every input the engine saw (prefetch and fetched resources).
    input_digest: str | None = None
    facts_used: list[dict[str, Any]] = field(default_factory=list)
    rules_fired: list[str] = field(default_factory=list)
    ruleset_version: str | None = None
    ruleset_hash: str | None = None
    code_version: str | None = None
    locale: str | None = None
    cards: list[dict[str, Any]] = field(default_factory=list)
    # The full assessment behind the cards (``hooks.engine.snapshot``), hashed with the rest of the record:
    # the assessment page renders this, never a recomputation (issue 12).
    assessment: dict[str, Any] | None = None
    http_status: int = 200
    # For failed calls: the reason class only (e.g. "unauthorized", "data-unobtainable"), never content.
    reason_class: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a mapping, shallow (issue 14): ``dataclasses.asdict`` deep-copied every card, fact and
        the whole assessment (641 µs of a 4.8 ms call). Only the nested records become dicts; the other values are
        the record's own (JSON values the handlers built), which ``codec.call_row`` encodes at once. A dataclass
        nested inside them is encoded as ``asdict`` would have given it (``chain.canonical_document``)."""
        document = {name: getattr(self, name) for name in _CALL_FIELDS}
        document["prefetch"] = [_flat(item) for item in self.prefetch]
        document["queries"] = [_flat(item) for item in self.queries]
        return document


_CALL_FIELDS = tuple(item.name for item in fields(HookCallRecord))
_NESTED_FIELDS = {kind: tuple(item.name for item in fields(kind)) for kind in (PrefetchKeyState, FhirQuery)}


def _flat(item: PrefetchKeyState | FhirQuery) -> dict[str, Any]:
    # Scalar fields only: the same dict as ``asdict``, without its recursion.
    return {name: getattr(item, name) for name in _NESTED_FIELDS[type(item)]}


@dataclass(slots=True)
class FeedbackRecord:
    record_id: str
    received_at: datetime
    service_id: str
    card_uuid: str
    outcome: Literal["accepted", "overridden"]
    outcome_timestamp: datetime
    accepted_suggestions: list[str] = field(default_factory=list)
    override_reason_system: str | None = None
    override_reason_code: str | None = None
    override_reason_display: str | None = None
    override_comment: str | None = None
    iss: str | None = None
    tenant: str | None = None
    jti: str | None = None
    # Filled by the store from the call record that showed this card, when it has one.
    hook_instance: str | None = None

    def dedupe_key(self) -> str:
        """What makes two reports the same feedback: card, outcome, accepted suggestions and the override
        reason code (the caller is added by the store). Not the timestamp: a client that reports the same
        acceptance again (a double click, a retried batch, the sandbox on every click) says nothing new."""
        suggestions = ",".join(sorted(set(self.accepted_suggestions)))
        reason = f"{self.override_reason_system}|{self.override_reason_code}"
        return f"{self.service_id}|{self.card_uuid}|{self.outcome}|{suggestions}|{reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
