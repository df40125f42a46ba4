"""The assessment page behind every card: opened only with its card's link, rendered from the audit trail.

Driven in process (httpx over ASGI) with the real service and the fixture patients: a real hook call, then
the link of one of its cards. Browser rendering is in tests/browser/.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from hooks.audit import MemoryAuditStore
from hooks.audit.records import HookCallRecord
from hooks.logging_setup import redact
from hooks.models import Card, CdsResponse
from hooks.pages.html import PAGE_CSP
from hooks.pages.links import mint_token
from hooks.registry import HookOutcome, ServiceDefinition, ServiceRegistry
from tests.conftest import FIXED_NOW
from tests.conftest import test_settings as make_settings
from tests.hooks.pages.helpers import SERVICE, hook_request, page_link, token_of, with_token

HTML = {"Accept": "text/html,application/xhtml+xml"}
METASTATIC = "metastatic_ckd4_hyperparathyroidism.json"


class Clock:
    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def call_and_link(client: Any, fixture: str = METASTATIC, language: str = "en",
                        hook_instance: str | None = None) -> tuple[str, str, dict[str, Any]]:
    pid, body = hook_request(fixture, hook_instance)
    response = await client.post(SERVICE, json=body, headers={"Accept-Language": language})
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert cards
    links = {page_link(card) for card in cards}
    assert len(links) == 1  # every card of one call opens the same page
    return pid, links.pop(), body


async def test_the_link_of_a_real_card_opens_the_full_assessment(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    async with make_client() as client:
        pid, link, body = await call_and_link(client)
        page = await client.get(link, headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert '<html lang="en">' in html
    for expected in ("Differential", "Rules that fired", "Gates", "Therapy fitted to this patient", "Work-up",
                     "Laboratory values over time", f"Patient/{pid}", "metastatic", "R11", "R13",
                     "Calcium 10.9 mg/dL (2.72 mmol/L), 17 Nov 2026", "Observation/met-ca",
                     "Ca × P 65 mg²/dL² (5.27 mmol²/L²)", "stop calcium and vitamin D", "cinacalcet",
                     "not on dialysis", "Cards shown", memory_store.calls[0].ruleset_hash or "?"):
        assert expected in html, expected
    # Charts of calcium, phosphate, Ca x P, PTH and eGFR, with their thresholds.
    assert sorted(re.findall(r'data-chart="chart-(\w+)"', html)) == ["ca_x_p", "calcium", "egfr", "phosphate",
                                                                     "pth_intact"]
    assert 'data-threshold="ca_x_p_ckd_warning"' in html
    # The view is an audited access, naming the patient and the caller, never the token.
    (action, details), = memory_store.accesses
    assert action == "view-assessment"
    assert details["outcome"] == "shown"
    assert details["patient"] == f"Patient/{pid}"
    assert details["hook_instance"] == body["hookInstance"]
    assert token_of(link) not in str(details)


async def test_the_french_page_follows_the_cards_conventions(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        _, link, _ = await call_and_link(client, language="fr")
        assert "lang=fr" in link
        french = (await client.get(link, headers=HTML)).text
        by_header = (await client.get(link.replace("lang=fr", "lang=xx"),
                                      headers={**HTML, "Accept-Language": "fr-FR,fr;q=0.9"})).text
        english = (await client.get(link.replace("lang=fr", "lang=en"), headers={**HTML, "Accept-Language": "fr"})).text
    assert '<html lang="fr">' in french
    for expected in ("Diagnostic différentiel", "Calcémie 2,72 mmol/L (10,9 mg/dL), 17/11/2026",
                     "Produit phosphocalcique (mmol²/L²)", "Ca × P 5,27 mmol²/L² (65 mg²/dL²)",
                     "Sous-type suggéré\u00a0:", "arrêt du calcium et de la vitamine D", "hors dialyse"):
        assert expected in french, expected
    assert "10.9" not in french
    assert "Calcium 10.9" not in french
    assert '<html lang="fr">' in by_header
    assert '<html lang="en">' in english


def _refused(page: Any, reason: str, status: int = 403) -> None:
    assert page.status_code == status
    assert f'data-refusal="{reason}"' in page.text
    assert "Patient/" not in page.text
    assert "mg/dL" not in page.text


async def test_refusals_are_clear_pages_and_audited(make_client: Callable[..., Any],
                                                    memory_store: MemoryAuditStore) -> None:
    clock = Clock()
    async with make_client(clock=clock) as client:
        _, link, _ = await call_and_link(client)
        token = token_of(link)
        header, payload, signature = token.split(".")
        _refused(await client.get(with_token(link, None), headers=HTML), "missing-token")
        _refused(await client.get(with_token(link, f"{header}.{payload}.{signature[::-1]}"), headers=HTML),
                 "invalid-token")
        clock.now = FIXED_NOW + timedelta(seconds=make_settings().assessment_link_ttl_s)
        _refused(await client.get(link, headers=HTML), "expired-token")
        clock.now = FIXED_NOW + timedelta(minutes=1)
        assert (await client.get(link, headers=HTML)).status_code == 200
    assert [d["outcome"] for _, d in memory_store.accesses] == ["missing-token", "invalid-token", "expired-token",
                                                                 "shown"]
    assert all("patient" not in d for _, d in memory_store.accesses[:3])


async def test_a_link_never_opens_another_patients_assessment(make_client: Callable[..., Any],
                                                              memory_store: MemoryAuditStore) -> None:
    async with make_client() as client:
        _, metastatic, _ = await call_and_link(client)
        other_pid, calciphylaxis, _ = await call_and_link(client, "calciphylaxis_dialysis_warfarin.json")
        # The metastatic patient's valid token, on the calciphylaxis patient's page.
        page = await client.get(with_token(calciphylaxis, token_of(metastatic)), headers=HTML)
        machine = await client.get(with_token(calciphylaxis, token_of(metastatic)))
    _refused(page, "wrong-patient")
    assert other_pid not in page.text
    assert machine.status_code == 403
    assert machine.headers["content-type"] == "application/fhir+json"
    outcome = machine.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "forbidden"
    assert "another patient" in outcome["issue"][0]["diagnostics"]
    assert memory_store.accesses[-1][1]["outcome"] == "wrong-patient"


@pytest.mark.parametrize(("token_kind", "code"), [("missing", "login"), ("garbage", "security")])
async def test_non_html_clients_get_an_operation_outcome(make_client: Callable[..., Any], token_kind: str,
                                                         code: str) -> None:
    async with make_client() as client:
        _, link, _ = await call_and_link(client)
        page = await client.get(with_token(link, None if token_kind == "missing" else "x.y.z"),
                                headers={"Accept": "application/fhir+json"})
    assert page.status_code == 403
    assert page.json()["issue"][0]["code"] == code
    assert "token" not in page.headers.get("location", "")


def _stored(pid: str, hook_instance: str, *, tenant: str, summary: str) -> HookCallRecord:
    return HookCallRecord(record_id=f"r-{tenant}", received_at=FIXED_NOW, service_id="calcinosis-assessment",
                          hook="patient-view", hook_instance=hook_instance, iss="https://ehr.test", tenant=tenant,
                          patient_ref=f"Patient/{pid}", locale="en", http_status=200,
                          cards=[{"summary": summary, "indicator": "info", "source": {"label": "x"}}])


async def test_two_callers_reusing_one_hook_instance_each_see_only_their_own(
    make_client: Callable[..., Any], memory_store: MemoryAuditStore
) -> None:
    hook_instance = "0b0c7a53-0f1e-4c41-9c3e-7c3d2f6c9a11"
    mine = _stored("mine", hook_instance, tenant="org-a", summary="Card for org A")
    theirs = _stored("theirs", hook_instance, tenant="org-b", summary="Card for org B")
    memory_store.calls.extend([mine, theirs])
    settings = make_settings()
    async with make_client() as client:
        pages = {}
        for record in (mine, theirs):
            token = mint_token(settings, record, FIXED_NOW)
            pages[record.tenant] = (await client.get(f"/assessment/{hook_instance}?token={token}", headers=HTML)).text
        foreign = copy.copy(mine)
        foreign.tenant = "org-c"  # a link bound to a caller that never made this call
        refused = await client.get(f"/assessment/{hook_instance}?token={mint_token(settings, foreign, FIXED_NOW)}",
                                   headers=HTML)
    assert "Card for org A" in pages["org-a"]
    assert "Card for org B" not in pages["org-a"]
    assert "Card for org B" in pages["org-b"]
    assert "Card for org A" not in pages["org-b"]
    _refused(refused, "wrong-patient")


async def test_a_link_to_a_call_that_was_never_recorded_is_not_found(make_client: Callable[..., Any]) -> None:
    ghost = _stored("ghost", "6c1f0a53-0f1e-4c41-9c3e-7c3d2f6c9a11", tenant="org-a", summary="never stored")
    token = mint_token(make_settings(), ghost, FIXED_NOW)
    async with make_client() as client:
        page = await client.get(f"/assessment/{ghost.hook_instance}?token={token}", headers=HTML)
    _refused(page, "not-found", 404)


async def test_the_page_is_the_stored_record_not_a_recomputation(make_client: Callable[..., Any],
                                                                 memory_store: MemoryAuditStore) -> None:
    async with make_client() as client:
        _, link, _ = await call_and_link(client)
        stored = memory_store.calls[0].assessment
        assert stored is not None
        stored["differential"][0]["score"] = 97
        stored["rules"][0]["basis"] = "as it was recorded"
        html = (await client.get(link, headers=HTML)).text
    assert "+97" in html
    assert "as it was recorded" in html


async def test_nothing_is_shown_when_the_access_cannot_be_audited(make_client: Callable[..., Any],
                                                                  memory_store: MemoryAuditStore) -> None:
    async with make_client() as client:
        pid, link, _ = await call_and_link(client)
        memory_store.fail_appends = True
        page = await client.get(link, headers=HTML)
    assert page.status_code == 503
    assert 'data-refusal="audit-unavailable"' in page.text
    assert pid not in page.text


def _other_service_registry() -> ServiceRegistry:
    registry = ServiceRegistry()
    card = Card(summary="A card of another service", indicator="warning",
                source={"label": "Another guideline", "url": "https://guidelines.test/x"}, detail="**Bold** fact")
    registry.register(ServiceDefinition(
        id="other", hook="patient-view", title="t", description="d",
        prefetch={"patient": "Patient/{{context.patientId}}"},
        essential_keys=frozenset({"patient"}), handler=lambda call: HookOutcome(CdsResponse(cards=[card]))))
    return registry


async def test_every_service_gets_links_and_a_page_of_its_cards(make_client: Callable[..., Any]) -> None:
    body = {"hook": "patient-view", "hookInstance": "5a9cf0f6-6b58-4a3b-b7a4-2ad0c16f4b1e",
            "context": {"userId": "Practitioner/1", "patientId": "p1"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}}}
    async with make_client(registry=_other_service_registry()) as client:
        card = (await client.post("/cds-services/other", json=body)).json()["cards"][0]
        assert [link["url"].split("?")[0] for link in card["links"]] == [
            f"https://testserver/assessment/{body['hookInstance']}", "https://guidelines.test/x"]
        html = (await client.get(page_link(card), headers=HTML)).text
    assert "A card of another service" in html
    assert "<strong>Bold</strong> fact" in html
    assert "kept no full assessment" in html


async def test_everything_from_the_record_is_escaped(make_client: Callable[..., Any],
                                                     memory_store: MemoryAuditStore) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with make_client() as client:
        _, link, _ = await call_and_link(client)
        record = memory_store.calls[0]
        assert record.assessment is not None
        record.assessment["rules"][0]["evidence"][1]["reference"] = hostile
        record.assessment["rules"][0]["finding"]["en"] = hostile
        record.assessment["setAside"] = [{"kind": "calcinosis", "reason": "negated", "cue": hostile,
                                          "reference": hostile}]
        record.assessment["notUsed"] = [{"kind": "unverified-lab-code", "concept": None, "count": 1,
                                         "code": hostile}]
        record.assessment["series"]["phosphate"]["points"][0]["reference"] = hostile
        record.cards[0]["summary"] = hostile
        record.cards[0]["detail"] = f"{hostile} [click](javascript:alert(1))"
        record.cards[0]["source"] = {"label": hostile, "url": "javascript:alert(1)"}
        html = (await client.get(link, headers=HTML)).text
    assert "<script>" not in html
    assert "<img" not in html
    assert "javascript:" not in html.replace("[click](javascript:alert(1))", "")
    assert 'href="javascript' not in html
    assert "&lt;script&gt;" in html


async def test_the_durable_audit_trail_keeps_the_assessment_and_records_each_view(
    tmp_path: Any, make_client: Callable[..., Any]
) -> None:
    from hooks.audit.factory import build_audit_store, open_audit_log

    database = tmp_path / "audit.sqlite3"
    settings = make_settings(audit_dsn=f"sqlite:///{database}")
    async with make_client(settings=settings, audit_store=build_audit_store(settings)) as client:
        pid, link, body = await call_and_link(client)
        assert (await client.get(link, headers=HTML)).status_code == 200
        assert (await client.get(with_token(link, "x.y.z"), headers=HTML)).status_code == 403
    log = open_audit_log(f"sqlite:///{database}", b"test-audit-key")
    log.open()
    try:
        rows = list(log.rows())
        assert log.verify().ok
    finally:
        log.close()
    call, shown, refused = rows
    assert call["kind"] == "call"
    assert '"assessment":{' in call["document"]
    assert token_of(link) not in database.read_bytes().decode("latin-1")
    assert (shown["kind"], shown["hook_instance"], shown["patient_ref"]) == ("access", body["hookInstance"],
                                                                             f"Patient/{pid}")
    assert '"action":"view-assessment"' in shown["document"]
    assert (refused["kind"], refused["patient_ref"]) == ("access", None)
    assert '"outcome":"invalid-token"' in refused["document"]


async def test_an_edited_record_is_never_shown(tmp_path: Any, make_client: Callable[..., Any]) -> None:
    import sqlite3

    from hooks.audit.factory import build_audit_store

    database = tmp_path / "audit.sqlite3"
    settings = make_settings(audit_dsn=f"sqlite:///{database}")
    async with make_client(settings=settings, audit_store=build_audit_store(settings)) as client:
        _, link, _ = await call_and_link(client)
        # Someone with the database file (not the key) changes the stored assessment.
        with sqlite3.connect(database) as connection:
            connection.execute("DROP TRIGGER audit_log_no_update")
            connection.execute("UPDATE audit_log SET document = replace(document, '\"score\":20', '\"score\":2') "
                               "WHERE kind = 'call'")
        page = await client.get(link, headers=HTML)
    _refused(page, "integrity", 409)


async def test_no_log_line_holds_the_token(make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_client() as client:
        _, link, _ = await call_and_link(client)
        await client.get(link, headers=HTML)
        await client.get(with_token(link, token_of(link)[:-3] + "xyz"), headers=HTML)
    assert caplog.records
    token = token_of(link)
    for record in caplog.records:
        message = record.getMessage()
        if record.name.startswith(("httpx", "httpcore")):
            # The test's own HTTP client logs the URL it requests; in the service these loggers are WARNING
            # and pass through the redacting filter, which removes the token.
            assert token[:40] not in redact(message)
        else:
            assert token[:40] not in message, record.name


async def test_the_pages_are_in_the_openapi_document(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        spec = (await client.get("/openapi.json")).json()
    page = spec["paths"]["/assessment/{hook_instance}"]["get"]
    assert {p["name"] for p in page["parameters"]} >= {"hook_instance", "token", "lang"}
    assert set(page["responses"]) == {"200", "403", "404", "409", "503"}
    assert set(spec["paths"]["/knowledge"]["get"]["responses"]) == {"200", "404"}
