"""Bounded schemathesis run over every operation of the OpenAPI schema: no 500, no undocumented status.

Positive and negative generation; the FHIR fallback has no allowed base, so nothing leaves the process.
Bounded by ``max_examples`` per operation and by hypothesis' own deadline settings.
"""

from __future__ import annotations

import asyncio

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from hooks.wiring import build_runtime
from tests.conftest import test_settings as settings_for_test

_settings = settings_for_test()
_app = create_app(_settings, audit_store=MemoryAuditStore())
# The ASGI transport schemathesis uses may not run the lifespan: build the runtime up front.
_app.state.runtime = asyncio.run(
    build_runtime(_settings, registry=None, audit_store=MemoryAuditStore(), verifier=None, fetcher=None, clock=None)
)

schema = schemathesis.openapi.from_asgi("/openapi.json", _app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_error_and_no_undocumented_status(case: schemathesis.Case) -> None:
    # Random ids only ever reach the 404 branch (tested elsewhere): aim the bodies at the real service.
    if case.path_parameters and "service_id" in case.path_parameters:
        case.path_parameters["service_id"] = "calcinosis-assessment"
    # The request schema is generic; calcinosis-assessment serves patient-view, so aim valid bodies at it.
    if isinstance(case.body, dict) and "hook" in case.body and case.meta and "negative" not in str(
        case.meta.generation.mode
    ).lower():
        case.body["hook"] = "patient-view"
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
