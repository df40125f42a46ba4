"""CDS Hooks 2.0 #feedback: the outcome of a card (accepted with its suggestions, or overridden with a reason)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, field_validator, model_validator

from hooks.model_base import EARLIEST_OUTCOME, FHIR_INSTANT, IncomingModel

__all__ = ["AcceptedSuggestion", "FeedbackCoding", "FeedbackItem", "FeedbackOverrideReason", "FeedbackRequest"]


class AcceptedSuggestion(IncomingModel):
    id: str = Field(min_length=1)


class FeedbackCoding(IncomingModel):
    system: str | None = None
    code: str = Field(min_length=1)
    display: str | None = None


class FeedbackOverrideReason(IncomingModel):
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


class FeedbackItem(IncomingModel):
    """#feedback: one outcome for one card; the same card may be reported several times."""

    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: FeedbackOverrideReason | None = None
    # Not strict: the instant arrives as a JSON string and becomes a datetime (checked as an instant first).
    outcomeTimestamp: AwareDatetime = Field(strict=False, json_schema_extra={"pattern": FHIR_INSTANT.pattern})

    @field_validator("outcomeTimestamp", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        if not isinstance(value, str) or not FHIR_INSTANT.fullmatch(value):
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


class FeedbackRequest(IncomingModel):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=1000)

