"""CDS Hooks 2.0 wire format: discovery, request, response and feedback.

Spec: https://cds-hooks.hl7.org/2.0/ (HL7/cds-hooks tag v2.0.1, ``input/pagecontent/index.md``) and the
hook library 1.0.1 for the per-hook ``context``. The rules of the spec are encoded as validators so that a
non-conformant card cannot be built: summary under 140 characters, ``source.label`` required,
``selectionBehavior`` whenever there are suggestions, ``display`` on every override reason, ``appContext``
only on smart links, and no null or empty optional field in anything we emit (#use-of-json).

Incoming objects accept unknown keys (vendors add their own, e.g. Epic's ``overrideReasons`` in feedback);
outgoing objects forbid them (``hooks.model_base``). The feedback models are in ``hooks.feedback_models``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    field_validator,
    model_validator,
)

# The feedback models live in hooks.feedback_models (re-exported here, where the other wire models are).
from hooks.feedback_models import FeedbackItem, FeedbackRequest
from hooks.model_base import EARLIEST_OUTCOME, IncomingModel, OutgoingModel

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


def is_fhir_id(value: str) -> bool:
    """FHIR id syntax, minus ``.`` and ``..``: as a path segment they would turn a read into a search or
    climb out of the resource type (``Patient/.`` is ``Patient/``, every patient)."""
    return bool(_FHIR_ID.fullmatch(value)) and value.strip(".") != ""


# --------------------------------------------------------------------------- request


class FhirAuthorization(IncomingModel):
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


class _HookContext(IncomingModel):
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


class CdsRequest(IncomingModel):
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


class Coding(OutgoingModel):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class OverrideReason(Coding):
    """#overridereason: "the CDS Service MUST provide a display"."""

    display: str = Field(min_length=1)


class Source(OutgoingModel):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(OutgoingModel):
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


class Suggestion(OutgoingModel):
    label: str = Field(min_length=1)
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(OutgoingModel):
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


class Card(OutgoingModel):
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


class CdsResponse(OutgoingModel):
    cards: list[Card]
    systemActions: list[Action] | None = None


# --------------------------------------------------------------------------- discovery


class ServiceDescriptor(OutgoingModel):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(OutgoingModel):
    services: list[ServiceDescriptor]

    @model_validator(mode="after")
    def _no_empty_optionals(self) -> DiscoveryResponse:
        # An empty services list is the spec's "no services" answer, not a forbidden empty optional.
        return self
