"""``GET /assessment/{hookInstance}`` (the full assessment behind a card) and ``GET /knowledge`` (the browser).

The assessment page shows PHI, so it is opened only with the signed link of the card (``hooks.pages.links``):
the token must verify, be unexpired, name this hook instance, and match the stored call's patient, caller
and service. The page is rendered from that stored audit record, whose chain link is checked first. Every
attempt, shown or refused, is an audited access written before anything is sent (no access row, no page).
Refusals are a short HTML page for browsers and an OperationOutcome for other clients; neither echoes the
token. The knowledge browser holds no PHI and needs no credential (docs/decisions.md).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from hooks.audit import AuditError
from hooks.audit.records import HookCallRecord
from hooks.audit.store import AuditIntegrityError
from hooks.errors import operation_outcome
from hooks.pages.assessment_view import assessment_view
from hooks.pages.html import page_response, render_page
from hooks.pages.knowledge_view import knowledge_view
from hooks.pages.links import ASSESSMENT_PATH, LinkRefused, read_token
from hooks.pages.text import PageWords, page_words, pick_locale
from hooks.runtime import Runtime, RuntimeDep

__all__ = ["install_pages"]

log = logging.getLogger("calcinosis_cds")

# Refusal reason -> (HTTP status, FHIR issue type).
_REFUSALS: Final = {
    "missing-token": (403, "login"),
    "invalid-token": (403, "security"),
    "expired-token": (403, "expired"),
    "wrong-patient": (403, "forbidden"),
    "not-found": (404, "not-found"),
    "integrity": (409, "conflict"),
    "audit-unavailable": (503, "transient"),
    "disabled": (404, "not-found"),
}
_QUERY = [
    {"name": "token", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 2048},
     "description": "the signed token of the card's link (short-lived, bound to the hook call)"},
    {"name": "lang", "in": "query", "required": False, "schema": {"type": "string", "enum": ["en", "fr"]},
     "description": "page language; otherwise Accept-Language, then CDS_LOCALE"},
]
_HTML = {"text/html": {"schema": {"type": "string"}}}
_OUTCOME = {"application/fhir+json": {"schema": {"type": "object"}}, **_HTML}


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {403: "Missing, invalid, expired or wrong-patient link", 404: "No such assessment",
                    409: "The stored record failed its integrity check", 503: "The access could not be audited"}
    return {status: {"description": descriptions[status], "content": _OUTCOME} for status in statuses}


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


def _refusal(request: Request, w: PageWords, reason: str) -> Response:
    status, code = _REFUSALS[reason]
    message = w.t("refusal", reason)
    if _wants_html(request):
        body = render_page("refusal.html.j2", lang=w.locale, title=w.t("page", "refused_title"), message=message,
                           reason=reason, code=f"{status} {reason}")
        return page_response(body, status)
    outcome = operation_outcome(message, code=code)
    return Response(orjson.dumps(outcome), status_code=status, media_type="application/fhir+json",
                    headers={"content-language": w.locale})


async def _record_for(runtime: Runtime, hook_instance: str, token: str | None) -> HookCallRecord:
    claims = read_token(runtime.settings, token, runtime.clock())
    if claims.hook_instance != hook_instance:
        # A valid link of another call (another patient, or this patient's other assessment): never opened here.
        raise LinkRefused("wrong-patient")
    try:
        found = [r for r in await runtime.audit.find_calls(hook_instance, claims.received_at) if r.http_status == 200]
    except AuditIntegrityError:
        raise LinkRefused("integrity") from None
    if not found:
        raise LinkRefused("not-found")
    # Several callers may have sent this hookInstance at the same instant: only the one the link was made for.
    record = next((r for r in found if claims.matches(r)), None)
    if record is None:
        raise LinkRefused("wrong-patient")
    return record


async def _audit_view(runtime: Runtime, request: Request, hook_instance: str, outcome: str,
                      record: HookCallRecord | None, locale: str) -> None:
    """BALP: who read which patient's assessment, when, through what; refusals too (never the token)."""
    details: dict[str, Any] = {"hook_instance": hook_instance, "outcome": outcome, "locale": locale,
                               "via": "assessment-link",
                               "client_addr": request.client.host if request.client else None}
    if record is not None:
        details.update(patient=record.patient_ref, service_id=record.service_id, iss=record.iss,
                       tenant=record.tenant, user=record.user_ref, record_id=record.record_id)
    await runtime.audit.append_access("view-assessment", details)


def install_pages(app: FastAPI) -> None:
    @app.get(f"{ASSESSMENT_PATH}/{{hook_instance}}", tags=["pages"], response_class=Response,
             responses={200: {"description": "The full assessment (HTML)", "content": _HTML},
                        **_documented(403, 404, 409, 503)},
             openapi_extra={"parameters": _QUERY})
    async def assessment_page(hook_instance: str, request: Request, runtime: RuntimeDep) -> Response:
        """The full assessment behind a card, read back from the audit trail (issue 12)."""
        settings = runtime.settings
        locale = pick_locale(request.query_params.get("lang"), request.headers.get("accept-language"),
                             settings.locale)
        w = page_words(locale)
        record: HookCallRecord | None = None
        try:
            record = await _record_for(runtime, hook_instance, request.query_params.get("token"))
            outcome = "shown"
        except LinkRefused as refused:
            outcome = refused.reason
        try:
            await _audit_view(runtime, request, hook_instance, outcome, record, locale)
        except AuditError:
            log.error("assessment page: the access could not be audited; nothing shown")
            return _refusal(request, w, "audit-unavailable")
        if record is None:
            return _refusal(request, w, outcome)
        body = render_page("assessment.html.j2", lang=locale, title=w.t("page", "assessment_title"),
                           view=assessment_view(record, w), w=w)
        return page_response(body)

    @app.get("/knowledge", tags=["pages"], response_class=Response,
             responses={200: {"description": "The knowledge browser (HTML, no PHI)", "content": _HTML},
                        404: {"description": "The knowledge browser is turned off", "content": _OUTCOME}},
             openapi_extra={"parameters": _QUERY[1:]})
    async def knowledge_page(request: Request, runtime: RuntimeDep) -> Response:
        """The knowledge files for the clinicians who maintain them: no PHI, no credential (issue 12)."""
        settings = runtime.settings
        locale = pick_locale(request.query_params.get("lang"), request.headers.get("accept-language"),
                             settings.locale)
        w = page_words(locale)
        if not settings.knowledge_page:
            return _refusal(request, w, "disabled")
        body = render_page("knowledge.html.j2", lang=locale, title=w.t("page", "knowledge_title"),
                           view=knowledge_view(w), w=w)
        return page_response(body)
