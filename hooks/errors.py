"""Errors the service answers with, each an HTTP status plus a FHIR OperationOutcome body.

CDS Hooks 2.0 lets a service return 4xx/5xx (https://cds-hooks.hl7.org/2.0/#http-status-codes); the
3.0 ballot says a non-2xx response SHOULD carry an OperationOutcome, which we do already. Bodies never
echo request content: requests carry access tokens and PHI.

Hierarchy::

    CdsError
    ├── BadRequest            400  malformed JSON, invalid body, wrong hook for the service
    ├── Unauthorized          401  any JWT failure (generic, no detail)
    ├── NotFound              404  unknown service
    ├── MethodNotAllowed      405
    ├── PreconditionFailed    412  data the assessment needs could not be obtained
    ├── PayloadTooLarge       413  body over CDS_MAX_BODY_BYTES
    ├── UnsupportedMediaType  415  not a JSON content type
    ├── TooManyRequests       429  per-issuer rate limit (Retry-After)
    └── ServiceUnavailable    503  the response could not be audited, so it is not sent
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "CdsError",
    "ClientDisconnected",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "operation_outcome",
]


def operation_outcome(
    diagnostics: str, *, code: str = "processing", severity: str = "error", expression: list[str] | None = None
) -> dict[str, Any]:
    """A minimal R4 OperationOutcome (http://hl7.org/fhir/R4/operationoutcome.html)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class CdsError(Exception):
    status_code: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"
    # The audit trail records failures by reason class only (never request content).
    reason_class: ClassVar[str] = "error"

    def __init__(
        self, diagnostics: str, *, expression: list[str] | None = None, failure: str | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        # A finer reason class for the audit record than the class-wide one (e.g. "wrong-patient").
        self.failure = failure
        # Set on rejections after the issuer was found on the allow-list, for the audit record (brief §3.3:
        # "401s, with iss/kid/reason class"); never shown to the client.
        self.caller_iss: str | None = None
        self.caller_kid: str | None = None

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.diagnostics, code=self.issue_code, expression=self.expression)

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(CdsError):
    status_code = 400
    issue_code = "invalid"
    reason_class = "invalid-request"


class ClientDisconnected(CdsError):
    """The client went away before its request body arrived (issue 14): its own reason class in the audit
    trail, never a 500 nor an error in the log. Nobody reads the answer; 499 is what proxies record for it."""

    status_code = 499
    issue_code = "incomplete"
    reason_class = "client-disconnected"


class Unauthorized(CdsError):
    status_code = 401
    issue_code = "security"
    reason_class = "unauthorized"

    def __init__(self, reason_class: str = "unauthorized") -> None:
        # The client sees one generic message; the precise reason stays in the audit reason class.
        super().__init__("Authentication failed")
        self.failure = reason_class

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(CdsError):
    status_code = 404
    issue_code = "not-found"
    reason_class = "not-found"


class MethodNotAllowed(CdsError):
    status_code = 405
    issue_code = "not-supported"
    reason_class = "method-not-allowed"


class PreconditionFailed(CdsError):
    status_code = 412
    issue_code = "incomplete"
    reason_class = "data-unobtainable"


class PayloadTooLarge(CdsError):
    status_code = 413
    issue_code = "too-costly"
    reason_class = "too-large"


class UnsupportedMediaType(CdsError):
    status_code = 415
    issue_code = "not-supported"
    reason_class = "unsupported-media-type"


class TooManyRequests(CdsError):
    status_code = 429
    issue_code = "throttled"
    reason_class = "rate-limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("Too many requests for this client; retry later")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceUnavailable(CdsError):
    status_code = 503
    issue_code = "transient"
    reason_class = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}
