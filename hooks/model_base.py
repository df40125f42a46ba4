"""What every CDS Hooks wire model shares: incoming objects are strict and keep unknown keys, outgoing ones
forbid unknown keys and never carry an empty field (CDS Hooks 2.0 #use-of-json). Split from ``hooks.models``
with the feedback models (``hooks.feedback_models``), which use the FHIR instant syntax below."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["EARLIEST_OUTCOME", "FHIR_INSTANT", "IncomingModel", "OutgoingModel"]

# FHIR R4 instant (http://hl7.org/fhir/R4/datatypes.html#instant): a zone is required, seconds too.
FHIR_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
# Feedback about a card cannot predate this service (nor CDS Hooks itself): an earlier outcomeTimestamp is a
# client bug such as "0" or 5 read as 1970, not an outcome. The upper bound is the receiving clock (pipeline).
EARLIEST_OUTCOME = datetime(2000, 1, 1, tzinfo=UTC)


class IncomingModel(BaseModel):
    # Strict: a JSON string is never read as a number, a number never as a string or a bool (the spec types
    # each field; "10.9" for a number or 5 for a timestamp is a client bug to report, not to guess at).
    model_config = ConfigDict(extra="allow", str_strip_whitespace=False, strict=True)


class OutgoingModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_empty_optionals(self) -> OutgoingModel:
        # The fields themselves (extra is forbidden): pydantic's ``__iter__`` would build a list per model. A tuple,
        # not a union, for isinstance: CPython 3.11 checks a tuple faster (49 models per dialysis response).
        for name, value in self.__dict__.items():
            if value is None:
                continue
            if isinstance(value, (str, list, dict)) and not value and name != "cards":
                raise ValueError(f"{name} must be omitted rather than sent empty (CDS Hooks #use-of-json)")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
