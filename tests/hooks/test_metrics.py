"""GET /metrics (hooks/metrics.py, docs/metrics.md): what an operator's Prometheus sees after real calls,
that labels stay bounded and free of PHI, that it can be switched off, and that the shipped alert rules
only name metrics the service exposes."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import respx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hooks.audit import MemoryAuditStore
from tests.auth.conftest import write_trust
from tests.conftest import test_settings as settings_for_test
from tests.support.cds_client import SigningKey, bearer, sandbox_token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "examples" / "patient-view-request.json").read_text(encoding="utf-8"))
DOCUMENTED = json.loads((ROOT / "examples" / "patient-view-response.json").read_text(encoding="utf-8"))
SERVICE = "/cds-services/calcinosis-assessment"
FHIR = "https://fhir.test/fhir"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def example(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE, "hookInstance": str(uuid.uuid4()), **changes}


async def test_calls_cards_stages_and_audit_appends_are_counted(make_client: Callable[..., Any]) -> None:
    probe_service = "cc-metastatic-" + uuid.uuid4().hex  # a path segment that must never become a label
    async with make_client() as client:
        assert (await client.get("/cds-services")).status_code == 200
        answered = await client.post(SERVICE, json=example())
        assert answered.status_code == 200
        cards = answered.json()["cards"]
        assert (await client.post(f"/cds-services/{probe_service}", json=example())).status_code == 404
        assert (await client.post(SERVICE, content=b"{", headers={"Content-Type": "application/json"})).status_code \
            == 400
        assert (await client.post(SERVICE, json=example(prefetch={}))).status_code == 412
        feedback = {"feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                                  "outcomeTimestamp": "2026-11-21T09:05:00Z"}]}
        assert (await client.post(SERVICE + "/feedback", json=feedback)).status_code == 200
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    found = samples(scraped.text)
    requests = "cds_requests_total"
    assert value(found, requests, endpoint="discovery", service="none", hook="none", status="200") == 1
    assert value(found, requests, endpoint="service", service="calcinosis-assessment", hook="patient-view",
                 status="200") == 1
    assert value(found, requests, endpoint="service", service="unknown", hook="none", status="404") == 1
    assert value(found, requests, endpoint="service", service="calcinosis-assessment", hook="none",
                 status="400") == 1
    assert value(found, requests, endpoint="service", service="calcinosis-assessment", hook="patient-view",
                 status="412") == 1
    assert value(found, requests, endpoint="feedback", service="calcinosis-assessment", hook="none",
                 status="200") == 1
    # The README example's cards (examples/patient-view-response.json), by kind and indicator.
    documented = Counter((card["extension"]["calcinosis-cds"]["kind"], card["indicator"])
                         for card in DOCUMENTED["cards"])
    assert {key: value(found, "cds_cards_total", kind=key[0], indicator=key[1]) for key in documented} == documented
    assert sum(v for (name, _), v in found.items() if name == "cds_cards_total") == len(cards)
    stage = "cds_stage_duration_seconds_count"
    assert value(found, stage, stage="prefetch_resolution") == 2  # the 200 and the 412
    assert value(found, stage, stage="engine") == 1
    assert value(found, stage, stage="audit_append") == 5  # four audited calls and one feedback batch
    assert value(found, stage, stage="fhir_fallback") == 0  # full prefetch: no FHIR query
    assert value(found, "cds_audit_append_failures_total", record="call") == 0
    assert value(found, "cds_build_info", version="0.1.0") == 1
    # No PHI and nothing caller-controlled in any label or value.
    for secret in (EXAMPLE["context"]["patientId"], EXAMPLE["context"]["userId"], probe_service,
                   cards[0]["uuid"], "Practitioner"):
        assert secret not in scraped.text


async def test_label_values_stay_bounded(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        for _ in range(30):
            await client.post(f"/cds-services/{uuid.uuid4()}", json=example())
            await client.post(SERVICE, json=example(hook=f"hook-{uuid.uuid4()}"))
        text = (await client.get("/metrics")).text
    series = [key for key in samples(text) if key[0] == "cds_requests_total"]
    assert len(series) == 2, series
    assert value(samples(text), "cds_requests_total", endpoint="service", service="unknown", hook="none",
                 status="404") == 30
    assert value(samples(text), "cds_requests_total", endpoint="service", service="calcinosis-assessment",
                 hook="other", status="400") == 30


async def test_jwt_rejections_by_reason_class(make_client: Callable[..., Any], tmp_path: Path) -> None:
    key = SigningKey.es384()
    trust = write_trust(tmp_path / "trust.yaml", {"issuers": [{"iss": "https://ehr.test",
                                                               "jwks": {"keys": [key.public_jwk()]}}]})
    settings = settings_for_test(auth_required=True, trust_file=trust)
    aud = settings.public_base_url + SERVICE
    tokens = {
        "missing-token": {},
        "expired": bearer(sandbox_token(key, iss="https://ehr.test", aud=aud, jku=None, exp=1, iat=0)),
        "wrong-audience": bearer(sandbox_token(key, iss="https://ehr.test", aud=aud + "/x", jku=None)),
        "unknown-issuer": bearer(sandbox_token(key, iss="https://other.test", aud=aud, jku=None)),
    }
    async with make_client(settings=settings) as client:
        statuses = [(await client.post(SERVICE, json=example(), headers=headers)).status_code
                    for headers in tokens.values()]
        accepted = await client.post(SERVICE, json=example(),
                                     headers=bearer(sandbox_token(key, iss="https://ehr.test", aud=aud, jku=None)))
        found = samples((await client.get("/metrics")).text)
    assert statuses == [401] * 4
    assert accepted.status_code == 200
    for reason in tokens:
        assert value(found, "cds_jwt_rejections_total", reason=reason) == 1
    assert value(found, "cds_requests_total", endpoint="service", service="calcinosis-assessment", hook="none",
                 status="401") == 4


async def test_audit_failures_are_counted(make_client: Callable[..., Any], memory_store: MemoryAuditStore) -> None:
    memory_store.fail_appends = True
    async with make_client() as client:
        assert (await client.post(SERVICE, json=example())).status_code == 503
        found = samples((await client.get("/metrics")).text)
    assert value(found, "cds_audit_append_failures_total", record="call") == 1
    assert value(found, "cds_requests_total", endpoint="service", service="calcinosis-assessment",
                 hook="patient-view", status="503") == 1


async def test_fhir_fallback_outcomes_and_breaker_state(make_client: Callable[..., Any]) -> None:
    settings = settings_for_test(fhir_allowed_bases=[FHIR], fhir_breaker_failures=3)
    request = example(prefetch={}, fhirServer=FHIR)
    with respx.mock(assert_all_called=False) as fhir:
        fhir.get(url__startswith=FHIR).mock(return_value=httpx.Response(503))
        async with make_client(settings=settings, fetcher=None) as client:
            before = samples((await client.get("/metrics")).text)
            answered = await client.post(SERVICE, json=request)
            found = samples((await client.get("/metrics")).text)
    assert answered.status_code == 412
    assert value(before, "cds_fhir_breakers", state="open") == 0
    assert value(found, "cds_fhir_breakers", state="open") == 1  # the one FHIR base, after 3 failures
    assert value(found, "cds_fhir_fallback_queries_total", outcome="error") >= 3
    assert value(found, "cds_stage_duration_seconds_count", stage="fhir_fallback") == 4  # one per prefetch key


async def test_metrics_can_be_switched_off(make_client: Callable[..., Any]) -> None:
    async with make_client(settings=settings_for_test(metrics_enabled=False)) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_the_shipped_alert_rules_name_only_exposed_metrics(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        await client.post(SERVICE, json=example())
        text = (await client.get("/metrics")).text
    exposed = {family.name for family in text_string_to_metric_families(text)}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert expressions
    for expression in expressions:
        for name in re.findall(r"\bcds_[a-z_]+", expression):
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert family in exposed, f"alert rule uses {name}, which /metrics does not expose"
    documented = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    for family in text_string_to_metric_families(text):
        assert f"`{family.name}" in documented, f"{family.name} is not documented in docs/metrics.md"
