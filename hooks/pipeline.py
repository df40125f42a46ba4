"""The service-call and feedback pipelines: verify the caller, read the request, resolve the data, run the
service, and commit the audit record before the answer leaves (security brief §3.4).

Every call, failed ones included, leaves one audit record; a response that cannot be audited is not sent.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from hooks import __version__
from hooks.audit import AuditError, FeedbackRecord, HookCallRecord, PrefetchKeyState
from hooks.auth import Caller
from hooks.data_access import ResolvedData, resolve_prefetch
from hooks.errors import (
    BadRequest,
    CdsError,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
)
from hooks.models import CdsRequest, FeedbackItem, FeedbackRequest, context_model_for
from hooks.offload import run_off_loop
from hooks.pages.links import audited_cards, with_links
from hooks.registry import HookCall, HookOutcome
from hooks.runtime import Runtime
from hooks.web import (
    describe_validation,
    endpoint_url,
    error_response,
    internal_error_response,
    json_response,
    preferred_locale,
    read_json_body,
)

__all__ = ["audited", "handle_feedback", "handle_service_call", "refusal_response"]

log = logging.getLogger("calcinosis_cds")

# An outcome cannot be later than its receipt; this much clock skew between the EHR and us is tolerated.
_OUTCOME_CLOCK_SKEW = timedelta(minutes=5)


def _overloaded() -> ServiceUnavailable:
    return ServiceUnavailable("the service is handling as many calls as it can; retry", failure="overloaded")


async def handle_service_call(service_id: str, request: Request, runtime: Runtime) -> Response:
    """A hook call, admitted while fewer than CDS_MAX_CONCURRENT_CALLS run; refused at once (503) otherwise."""
    started = time.perf_counter()
    record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock(), service_id=service_id)
    record.code_version = __version__
    if runtime.call_slots.locked():
        return await audited(runtime, record, refusal_response(record, _overloaded()), started)
    async with runtime.call_slots:
        return await _service_call(service_id, request, runtime, record, started)


async def _service_call(
    service_id: str, request: Request, runtime: Runtime, record: HookCallRecord, started: float
) -> Response:
    settings = runtime.settings
    response: Response
    try:
        caller = await runtime.verifier.verify(
            request, endpoint_url(settings, request), required=bool(settings.auth_required)
        )
        _record_caller(record, caller)
        if not runtime.registry.exists(service_id):
            raise NotFound("no CDS service with this id")
        cds_request, raw = await read_json_body(request, CdsRequest)
        record.hook = cds_request.hook
        record.hook_instance = cds_request.hookInstance
        record.fhir_server = _without_userinfo(cds_request.fhirServer)
        service = runtime.registry.resolve(service_id, cds_request.hook)
        try:
            context = context_model_for(service.hook).model_validate(cds_request.context)
        except ValidationError as exc:
            raise BadRequest(describe_validation(exc), expression=["context"]) from None
        record.user_ref = context.userId
        record.patient_ref = f"Patient/{context.patientId}"
        record.encounter_ref = f"Encounter/{context.encounterId}" if context.encounterId else None
        locale = preferred_locale(request.headers.get("accept-language"), settings.locale)
        record.locale = locale
        context_values = context.model_dump()
        prepared = service.prepare(context_values) if service.prepare is not None else None
        deadline = time.monotonic() + settings.fhir_deadline_s
        with runtime.metrics.stage("prefetch_resolution"):
            now = runtime.clock()
            complete_after = {key: (now - timedelta(days=window.days), window.date_param)
                              for key, window in service.look_back.items()}
            data = await _resolve(cds_request, service.prefetch, context_values, caller, runtime, deadline,
                                  complete_after)
        runtime.metrics.fhir_answered(data.queries)
        _record_data(record, data, raw)
        if data.refusal is not None:
            raise data.refusal
        for key in sorted(service.essential_keys):
            essential = data.keys.get(key)
            if essential is None or not essential.obtained:
                failure = essential.failure if essential and essential.failure else "not obtainable"
                raise PreconditionFailed(
                    f"CDS Hooks prefetch key '{key}' was absent or its data could not be obtained ({failure})",
                    expression=[f"prefetch.{key}"],
                )
        call = HookCall(request=cds_request, context=context_values, data=data, locale=locale, now=runtime.clock(),
                        prepared=prepared)

        def answer() -> tuple[HookOutcome, dict[str, Any], list[dict[str, Any]]]:
            outcome = service.handler(call)
            payload = outcome.response.to_json()
            # Issue 12: every card links to its full assessment (a signed, short-lived link) and its guideline;
            # the audit record keeps the links without the token and the assessment the page is rendered from.
            # On the worker, straight after the cards (issue 14): on the loop, with the cards no longer in the
            # caches, the same work took five times as long.
            payload["cards"] = with_links(payload["cards"], record, settings, runtime.clock())
            return outcome, payload, audited_cards(payload["cards"], settings)

        with runtime.metrics.stage("engine"):
            outcome, payload, record.cards = await run_off_loop(
                runtime.workers, settings.assess_timeout_s, "the assessment", answer
            )
        for card in payload["cards"]:
            runtime.metrics.card_shown(card)
        record.assessment = outcome.snapshot
        record.rules_fired = outcome.rules_fired
        record.facts_used = outcome.facts_used
        record.ruleset_version = outcome.ruleset_version
        record.ruleset_hash = outcome.ruleset_hash
        response = json_response(payload)
    except CdsError as error:
        response = refusal_response(record, error)
    except AuditError:
        response = refusal_response(record, ServiceUnavailable("the audit store is unavailable; retry"))
    except Exception as exc:  # a bug still leaves an audit record: the class only, no content
        log.error("unhandled %s in service %s", type(exc).__name__, service_id)
        record.reason_class = f"internal-error:{type(exc).__name__}"
        response = internal_error_response()
    return await audited(runtime, record, response, started)


async def _resolve(
    cds_request: CdsRequest,
    templates: Mapping[str, str],
    context_values: dict[str, Any],
    caller: Caller,
    runtime: Runtime,
    deadline: float,
    complete_after: Mapping[str, tuple[datetime, str]],
) -> ResolvedData:
    authorization = cds_request.fhirAuthorization
    return await resolve_prefetch(
        prefetch=cds_request.prefetch,
        templates=templates,
        context=context_values,
        fhir_server=cds_request.fhirServer,
        access_token=authorization.access_token.get_secret_value() if authorization else None,
        # Security brief §2.2: a token scoped to another patient is never used (resolve_prefetch checks).
        authorized_patient=authorization.patient if authorization else None,
        token_expires_in=authorization.expires_in if authorization else None,
        token_scope=authorization.scope if authorization else None,
        fetcher=runtime.fetcher,
        allowed_bases=tuple(runtime.settings.fhir_allowed_bases) + caller.fhir_servers,
        deadline=deadline,
        max_call_bytes=runtime.settings.fhir_max_call_bytes,
        complete_after=complete_after,
    )


def refusal_response(record: HookCallRecord, error: CdsError, prefix: str = "") -> Response:
    """Record a refusal by reason class (and the allow-listed issuer when known) and build its response."""
    record.reason_class = prefix + (getattr(error, "failure", None) or error.reason_class)
    if error.caller_iss and not record.iss:
        record.iss, record.kid = error.caller_iss, error.caller_kid
    return error_response(error)


async def audited(
    runtime: Runtime, record: HookCallRecord, response: Response, started: float, endpoint: str = "service"
) -> Response:
    """Commit the record, then let the response go; a response that cannot be audited is not sent."""
    record.http_status = response.status_code
    record.responded_at = runtime.clock()
    record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    try:
        with runtime.metrics.stage("audit_append"):
            await runtime.audit.append_call(record)
    except AuditError:
        log.error("audit append failed for a %s response; answering 503", response.status_code)
        runtime.metrics.audit_failed("call")
        response = error_response(ServiceUnavailable("the response could not be audited, so it is not sent"))
    runtime.metrics.request(endpoint, record.service_id, record.hook, response.status_code)
    return response


def _without_userinfo(url: str | None) -> str | None:
    """The FHIR base as recorded: never with a user:password part."""
    if url is None:
        return None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _record_caller(record: HookCallRecord, caller: Caller) -> None:
    record.iss, record.tenant, record.jti = caller.iss, caller.tenant, caller.jti
    record.kid, record.alg = caller.kid, caller.alg


def _record_data(record: HookCallRecord, data: ResolvedData, raw: bytes) -> None:
    record.prefetch = [
        PrefetchKeyState(
            key=key.key,
            received=key.received,
            resources=len(key.resources or ()),
            fetched=key.fetched,
            obtained=key.obtained,
            complete_by=key.complete_by,
        )
        for key in data.keys.values()
    ]
    record.queries = list(data.queries)
    record.token_use = data.token_use
    hasher = hashlib.sha256(raw)
    for key in sorted(data.keys):
        if data.keys[key].fetched:
            hasher.update(orjson.dumps(data.keys[key].resources, option=orjson.OPT_SORT_KEYS))
    record.input_digest = hasher.hexdigest()


def _feedback_record(item: FeedbackItem, service_id: str, received: datetime, caller: Caller) -> FeedbackRecord:
    reason = item.overrideReason.reason if item.overrideReason else None
    return FeedbackRecord(
        record_id=str(uuid.uuid4()),
        received_at=received,
        service_id=service_id,
        card_uuid=item.card,
        outcome=item.outcome,
        outcome_timestamp=item.outcomeTimestamp,
        accepted_suggestions=[s.id for s in item.acceptedSuggestions or ()],
        override_reason_system=reason.system if reason else None,
        override_reason_code=reason.code if reason else None,
        override_reason_display=reason.display if reason else None,
        override_comment=item.overrideReason.userComment if item.overrideReason else None,
        iss=caller.iss,
        tenant=caller.tenant,
        jti=caller.jti,
    )


async def handle_feedback(service_id: str, request: Request, runtime: Runtime) -> Response:
    """Accepted feedback becomes feedback records; a refused feedback call is audited like a refused hook call."""
    started = time.perf_counter()
    try:
        if runtime.call_slots.locked():
            raise _overloaded()
        async with runtime.call_slots:
            return await _record_feedback(service_id, request, runtime)
    except (CdsError, AuditError) as error:
        cds_error = error if isinstance(error, CdsError) else ServiceUnavailable("the audit store is unavailable")
        record = HookCallRecord(record_id=str(uuid.uuid4()), received_at=runtime.clock(), service_id=service_id)
        record.code_version = __version__
        response = refusal_response(record, cds_error, prefix="feedback:")
        return await audited(runtime, record, response, started, endpoint="feedback")


async def _record_feedback(service_id: str, request: Request, runtime: Runtime) -> Response:
    settings = runtime.settings
    caller = await runtime.verifier.verify(
        request, endpoint_url(settings, request), required=bool(settings.auth_required)
    )
    if not runtime.registry.exists(service_id):
        raise NotFound("no CDS service with this id")
    body, _ = await read_json_body(request, FeedbackRequest)
    received = runtime.clock()
    for index, item in enumerate(body.feedback):
        if item.outcomeTimestamp > received + _OUTCOME_CLOCK_SKEW:
            where = f"feedback[{index}].outcomeTimestamp"
            raise BadRequest(f"feedback.{index}.outcomeTimestamp: is in the future", expression=[where])
    records = [_feedback_record(item, service_id, received, caller) for item in body.feedback]
    try:
        with runtime.metrics.stage("audit_append"):
            result = await runtime.audit.append_feedback(records)
    except AuditError:
        runtime.metrics.audit_failed("feedback")
        raise ServiceUnavailable("the feedback could not be recorded; send it again") from None
    runtime.metrics.request("feedback", service_id, None, 200)
    return json_response({"stored": result.stored, "duplicates": result.duplicates})
