"""CDS Hooks 2.0 wire format: discovery, request, response and feedback.

Spec: https://cds-hooks.hl7.org/2.0/ (HL7/cds-hooks tag v2.0.1, ``input/pagecontent/index.md``) and the
hook library 1.0.1 for the per-hook ``context``. The rules of the spec are encoded as validators so that a
non-conformant card cannot be built: summary under 140 characters, ``source.label`` required,
``selectionBehavior`` whenever there are suggestions, ``display`` on every override reason, ``appContext``
only on smart links, and no null or empty optional field in anything we emit (#use-of-json).

Incoming objects accept unknown keys (vendors add their own, e.g. Epic's ``overrideReasons`` in feedback);
outgoing objects forbid them.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    field_validator,
    model_validator,
)

__all__ = [
    "EARLIEST_OUTCOME",
    "SUMMARY_MAX_CHARS",
    "Action",
    "Card",
    "CdsRequest",
    "CdsResponse",
    "Coding",
    "DiscoveryResponse",
    "EncounterDischargeContext",
    "FeedbackItem",
    "FeedbackRequest",
    "FhirAuthorization",
    "Link",
    "OrderSelectContext",
    "OrderSignContext",
    "OverrideReason",
    "PatientViewContext",
    "ServiceDescriptor",
    "Source",
    "Suggestion",
    "context_model_for",
    "is_fhir_id",
]

# "summary ... MUST be less than 140 characters" (#card-attributes): 139 is the longest allowed.
SUMMARY_MAX_CHARS = 139

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,8192}=*")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REFERENCE = re.compile(r"^[A-Za-z]+/([A-Za-z0-9\-.]{1,64})$")
_USER_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")
# FHIR R4 instant (http://hl7.org/fhir/R4/datatypes.html#instant): a zone is required, seconds too.
_FHIR_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
# Feedback about a card cannot predate this service (nor CDS Hooks itself): an earlier outcomeTimestamp is a
# client bug such as "0" or 5 read as 1970, not an outcome. The upper bound is the receiving clock (pipeline).
EARLIEST_OUTCOME = datetime(2000, 1, 1, tzinfo=UTC)


def is_fhir_id(value: str) -> bool:
    """FHIR id syntax, minus ``.`` and ``..``: as a path segment they would turn a read into a search or
    climb out of the resource type (``Patient/.`` is ``Patient/``, every patient)."""
    return bool(_FHIR_ID.fullmatch(value)) and value.strip(".") != ""


class _Incoming(BaseModel):
    # Strict: a JSON string is never read as a number, a number never as a string or a bool (the spec types
    # each field; "10.9" for a number or 5 for a timestamp is a client bug to report, not to guess at).
    model_config = ConfigDict(extra="allow", str_strip_whitespace=False, strict=True)


class _Outgoing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_empty_optionals(self) -> _Outgoing:
        # The fields themselves (extra is forbidden): pydantic's ``__iter__`` would build a list per model.
        for name, value in self.__dict__.items():
            if value is None:
                continue
            if isinstance(value, str | list | dict) and len(value) == 0 and name != "cards":
                raise ValueError(f"{name} must be omitted rather than sent empty (CDS Hooks #use-of-json)")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- request


class FhirAuthorization(_Incoming):
    """#passing-the-access-token-to-the-cds-service. The token is a SecretStr: it never prints or logs."""

    model_config = ConfigDict(extra="allow", strict=True)

    access_token: SecretStr = Field(json_schema_extra={"pattern": "^" + _B64TOKEN.pattern + "$", "format": None})
    token_type: str = Field(json_schema_extra={"pattern": "^[Bb][Ee][Aa][Rr][Ee][Rr]$"})
    expires_in: StrictInt
    scope: str
    subject: str
    patient: str | None = None

    @field_validator("access_token")
    @classmethod
    def _b64token(cls, value: SecretStr) -> SecretStr:
        # RFC 6750 §2.1 b64token: anything else (CR/LF, non-ASCII) could not be sent as a header anyway.
        if not _B64TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("access_token must be an RFC 6750 bearer token (b64token, at most 8192 characters)")
        return value

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("token_type must be Bearer")
        return value


class _HookContext(_Incoming):
    userId: str
    patientId: str = Field(min_length=1, max_length=64)
    encounterId: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("userId")
    @classmethod
    def _user_reference(cls, value: str) -> str:
        match = _REFERENCE.match(value)
        if not match or value.split("/", 1)[0] not in _USER_TYPES or not is_fhir_id(match.group(1)):
            raise ValueError("userId must be a Practitioner, PractitionerRole, Patient or RelatedPerson reference")
        return value

    @field_validator("patientId", "encounterId")
    @classmethod
    def _fhir_id(cls, value: str | None) -> str | None:
        if value is not None and not is_fhir_id(value):
            raise ValueError("must be a FHIR id ([A-Za-z0-9-.]{1,64}, not '.' or '..')")
        return value


class PatientViewContext(_HookContext):
    """hook-library 1.0.1 patient-view: userId, patientId required; encounterId optional."""


class OrderSignContext(_HookContext):
    """order-sign: draftOrders (a Bundle) required, not a prefetch token."""

    draftOrders: dict[str, Any]

    @field_validator("draftOrders")
    @classmethod
    def _bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        return value


class OrderSelectContext(OrderSignContext):
    """order-select: also ``selections``, references into draftOrders (hook page: REQUIRED)."""

    selections: list[str] = Field(min_length=1)

    @field_validator("selections")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        if not all((match := _REFERENCE.match(item)) and is_fhir_id(match.group(1)) for item in value):
            raise ValueError("selections must be Type/id references")
        return value


class EncounterDischargeContext(_HookContext):
    encounterId: str = Field(min_length=1, max_length=64)


_CONTEXTS: dict[str, type[_HookContext]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
    "encounter-discharge": EncounterDischargeContext,
}


def context_model_for(hook: str) -> type[_HookContext]:
    return _CONTEXTS[hook]


class CdsRequest(_Incoming):
    """#calling-a-cds-service. ``context`` is validated per hook after dispatch on (id, hook)."""

    hook: str = Field(min_length=1, max_length=128, examples=["patient-view"])
    hookInstance: str = Field(json_schema_extra={"format": "uuid"})
    fhirServer: str | None = Field(default=None, max_length=2048)
    fhirAuthorization: FhirAuthorization | None = None
    # Documented as the patient-view context; validated against the model of the hook actually called.
    context: dict[str, Any] = Field(json_schema_extra={
        "properties": {"userId": {"type": "string", "pattern": "^Practitioner/[A-Za-z0-9]{1,20}$"},
                       "patientId": {"type": "string", "pattern": "^[A-Za-z0-9]{1,20}$"}},
        "required": ["userId", "patientId"]})
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError("hookInstance must be a UUID") from None
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> CdsRequest:
        # "If fhirAuthorization is provided, this field [fhirServer] is REQUIRED" (cds-r-1 in the 3.0 ballot).
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is present")
        return self


# --------------------------------------------------------------------------- response


class Coding(_Outgoing):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class OverrideReason(Coding):
    """#overridereason: "the CDS Service MUST provide a display"."""

    display: str = Field(min_length=1)


class Source(_Outgoing):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Outgoing):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Action:
        if self.type in {"create", "update"} and self.resource is None:
            raise ValueError(f"a {self.type} action needs a resource")
        if self.type == "delete" and self.resourceId is None:
            raise ValueError("a delete action needs resourceId")
        return self


class Suggestion(_Outgoing):
    label: str = Field(min_length=1)
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Outgoing):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_on_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links")
        return self


class Card(_Outgoing):
    """#card-attributes."""

    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=SUMMARY_MAX_CHARS)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReason] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        if self.selectionBehavior is not None and not self.suggestions:
            raise ValueError("selectionBehavior is only meaningful with suggestions")
        recommended = sum(1 for s in self.suggestions or () if s.isRecommended)
        if recommended > 1 and self.selectionBehavior != "any":
            raise ValueError("several recommended suggestions need selectionBehavior 'any'")
        return self


class CdsResponse(_Outgoing):
    cards: list[Card]
    systemActions: list[Action] | None = None


# --------------------------------------------------------------------------- discovery


class ServiceDescriptor(_Outgoing):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(_Outgoing):
    services: list[ServiceDescriptor]

    @model_validator(mode="after")
    def _no_empty_optionals(self) -> DiscoveryResponse:
        # An empty services list is the spec's "no services" answer, not a forbidden empty optional.
        return self


# --------------------------------------------------------------------------- feedback


class AcceptedSuggestion(_Incoming):
    id: str = Field(min_length=1)


class FeedbackCoding(_Incoming):
    system: str | None = None
    code: str = Field(min_length=1)
    display: str | None = None


class FeedbackOverrideReason(_Incoming):
    # A reason or a comment, as a value rather than null (the schema says what _something checks).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["reason"], "properties": {"reason": {"type": "object"}}},
        {"required": ["userComment"], "properties": {"userComment": {"type": "string"}}},
    ]})

    reason: FeedbackCoding | None = None
    userComment: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackOverrideReason:
        if self.reason is None and self.userComment is None:
            raise ValueError("overrideReason needs a reason or a userComment")
        return self


class FeedbackItem(_Incoming):
    """#feedback: one outcome for one card; the same card may be reported several times."""

    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: FeedbackOverrideReason | None = None
    # Not strict: the instant arrives as a JSON string and becomes a datetime (checked as an instant first).
    outcomeTimestamp: AwareDatetime = Field(strict=False, json_schema_extra={"pattern": _FHIR_INSTANT.pattern})

    @field_validator("outcomeTimestamp", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _FHIR_INSTANT.fullmatch(value):
            raise ValueError("outcomeTimestamp must be a FHIR instant such as 2021-12-11T10:05:31Z")
        return value

    @field_validator("outcomeTimestamp")
    @classmethod
    def _representable(cls, value: datetime) -> datetime:
        try:
            in_utc = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("outcomeTimestamp is outside the calendar once converted to UTC") from None
        if in_utc < EARLIEST_OUTCOME:
            raise ValueError(f"outcomeTimestamp is before {EARLIEST_OUTCOME:%Y-%m-%d}")
        return value

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome needs acceptedSuggestions")
        return self


class FeedbackRequest(_Incoming):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=1000)

