"""Reading one FHIR answer: status, content type, size cap while streaming, JSON, and the shape of the body.

Whatever a FHIR server answers ends as a ``Page`` or a ``QueryFailure``: an answer of an unexpected shape is a
failure of that query, never an exception for the hook call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from fhir_mappings.prefetch import bundle_next_link
from hooks.fhir.queries import is_read, resource_type

__all__ = ["Outcome", "Page", "QueryFailure", "read_body", "read_page", "validate_body"]

Outcome = Literal[
    "ok", "timeout", "error", "rejected", "circuit-open", "not-allowed", "too-large", "bad-content-type", "deadline"
]
_FHIR_JSON = ("application/fhir+json", "application/json")


class QueryFailure(Exception):
    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        status: int | None = None,
        *,
        unavailable: bool = False,
        local: bool = False,
    ) -> None:
        super().__init__(reason)
        self.outcome: Outcome = outcome
        self.reason = reason
        self.status = status
        # Counts towards the breaker and may be retried once.
        self.unavailable = unavailable
        # Refused on our side before anything reached the server: no verdict on it, no token sent, no retry.
        self.local = local


@dataclass(slots=True)
class Page:
    resources: list[dict[str, Any]]
    next_url: str | None
    status: int


async def read_body(response: httpx.Response, limit: int) -> bytes:
    """The body of a 200 FHIR JSON answer, at most ``limit`` bytes; anything else is a ``QueryFailure``."""
    status = response.status_code
    if status in (401, 403):
        raise QueryFailure("rejected", f"the FHIR server refused the request ({status})", status)
    if 300 <= status < 400:
        raise QueryFailure("error", f"the FHIR server redirected ({status}), not followed", status)
    if status >= 500:
        raise QueryFailure("error", f"the FHIR server failed ({status})", status, unavailable=True)
    if status != 200:
        raise QueryFailure("error", f"the FHIR server answered {status}", status)
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _FHIR_JSON:
        raise QueryFailure("bad-content-type", "the FHIR server answered a non-JSON content type", status)
    # identity is asked for; a compressed body would be inflated before the size cap could count it (a few
    # kB of gzip can be gigabytes), so it is not read at all.
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise QueryFailure("error", "compressed response refused", status)
    declared = response.headers.get("content-length", "")
    # isdigit() also accepts "²", which int() then refuses.
    if declared.isascii() and declared.isdecimal() and int(declared) > limit:
        raise QueryFailure("too-large", f"the FHIR response is over {limit} bytes", status)
    body = bytearray()
    # Raw bytes are counted: with identity they are exactly what gets parsed.
    async for chunk in response.aiter_raw():
        body.extend(chunk)
        if len(body) > limit:
            raise QueryFailure("too-large", f"the FHIR response is over {limit} bytes", status)
    return bytes(body)


def read_page(body: bytes, relative: str, status: int) -> Page:
    """Parse and check one body. CPU-bound on large bodies: the client runs it off the event loop."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise QueryFailure("error", "the FHIR server answered invalid JSON", status) from None
    try:
        return validate_body(document, relative, status)
    except QueryFailure:
        raise
    except Exception as exc:
        # A shape validate_body did not foresee: a bad response (the server did answer), never a 500.
        raise QueryFailure(
            "error", f"the FHIR server answered an unreadable resource ({type(exc).__name__})", status
        ) from None


def validate_body(document: Any, relative: str, status: int) -> Page:
    """The body must be what the query asks for: the resource for a read, a searchset Bundle for a search."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise QueryFailure("error", "the FHIR server answered something that is not a FHIR resource", status)
    kind = document["resourceType"]
    if kind == "OperationOutcome":
        raise QueryFailure("error", "the FHIR server answered with an OperationOutcome", status)
    if is_read(relative):
        if kind != resource_type(relative):
            raise QueryFailure(
                "error", f"the FHIR server answered a {kind} to a {resource_type(relative)} read", status
            )
        return Page([document], None, status)
    if kind != "Bundle" or document.get("type") != "searchset":
        raise QueryFailure("error", "the FHIR server did not answer a search with a searchset Bundle", status)
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise QueryFailure("error", "Bundle.entry is not an array", status)
    resources: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        if resource["resourceType"] == "OperationOutcome":
            # search.mode=outcome: a warning or an error about the search itself. One that cannot be read
            # could be an error, so it fails the query rather than being skipped.
            if any(severity in {"error", "fatal"} for severity in _severities(resource, status)):
                raise QueryFailure("error", "the searchset Bundle carries an error OperationOutcome", status)
            continue
        resources.append(resource)
    return Page(resources, bundle_next_link(document), status)


def _severities(outcome: dict[str, Any], status: int) -> list[str]:
    issues = outcome.get("issue")
    if issues is None:
        return []
    if not isinstance(issues, list) or not all(
        isinstance(issue, dict) and isinstance(issue.get("severity"), str) for issue in issues
    ):
        raise QueryFailure("error", "the searchset Bundle carries a malformed OperationOutcome", status)
    return [issue["severity"] for issue in issues]
