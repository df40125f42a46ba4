"""The signed link of every card: who it opens the assessment for, for how long, and where it never appears."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from hooks.audit.records import HookCallRecord
from hooks.pages.links import LinkRefused, audited_cards, mint_token, read_token, with_links
from tests.conftest import FIXED_NOW
from tests.conftest import test_settings as make_settings

SETTINGS = make_settings()


def record(**changes: Any) -> HookCallRecord:
    values: dict[str, Any] = {
        "record_id": "r1", "received_at": FIXED_NOW, "service_id": "calcinosis-assessment",
        "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "patient_ref": "Patient/p1",
        "iss": "https://ehr.test", "tenant": "org-a", "locale": "en",
    }
    values.update(changes)
    return HookCallRecord(**values)


def card(**changes: Any) -> dict[str, Any]:
    return {"uuid": "u1", "summary": "s", "indicator": "info",
            "source": {"label": "Reiter N et al. 2011", "url": "https://pubmed.ncbi.nlm.nih.gov/21679810/"},
            **changes}


def test_a_token_opens_only_the_call_it_was_minted_for() -> None:
    token = mint_token(SETTINGS, record(), FIXED_NOW)
    claims = read_token(SETTINGS, token, FIXED_NOW + timedelta(minutes=5))
    assert claims.hook_instance == record().hook_instance
    assert claims.received_at == FIXED_NOW
    assert claims.matches(record())
    for other in (record(patient_ref="Patient/p2"), record(iss="https://other.test"), record(tenant="org-b"),
                  record(tenant=None), record(service_id="other-service")):
        assert not claims.matches(other)


def test_tokens_are_deterministic_and_carry_no_patient_id() -> None:
    first, second = mint_token(SETTINGS, record(), FIXED_NOW), mint_token(SETTINGS, record(), FIXED_NOW)
    assert first == second
    payload = json.loads(base64.urlsafe_b64decode(first.split(".")[1] + "=="))
    assert set(payload) == {"aud", "exp", "hi", "rcv", "bnd"}
    assert "p1" not in json.dumps(payload)
    assert "org-a" not in json.dumps(payload)


def test_a_token_expires_after_the_configured_lifetime() -> None:
    settings = make_settings(assessment_link_ttl_s=600)
    token = mint_token(settings, record(), FIXED_NOW)
    read_token(settings, token, FIXED_NOW + timedelta(seconds=599))
    with pytest.raises(LinkRefused) as refused:
        read_token(settings, token, FIXED_NOW + timedelta(seconds=600))
    assert refused.value.reason == "expired-token"


@pytest.mark.parametrize("damage", ["signature", "payload", "truncated", "empty", "garbage", "huge"])
def test_a_tampered_token_is_invalid(damage: str) -> None:
    token = mint_token(SETTINGS, record(), FIXED_NOW)
    header, payload, signature = token.split(".")
    forged_payload = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload["hi"] = "00000000-0000-4000-8000-000000000000"
    forged = base64.urlsafe_b64encode(json.dumps(forged_payload).encode()).rstrip(b"=").decode()
    damaged = {
        "signature": f"{header}.{payload}.{signature[:-2]}AA",
        "payload": f"{header}.{forged}.{signature}",
        "truncated": token[:-10],
        "empty": "",
        "garbage": "not-a-token",
        "huge": "a" * 5000,
    }[damage]
    with pytest.raises(LinkRefused) as refused:
        read_token(SETTINGS, damaged, FIXED_NOW)
    assert refused.value.reason == ("missing-token" if damage == "empty" else "invalid-token")


def test_a_token_from_another_key_audience_or_algorithm_is_invalid() -> None:
    claims = {"aud": f"{SETTINGS.public_base_url}/assessment", "exp": int(FIXED_NOW.timestamp()) + 60,
              "hi": "h", "rcv": FIXED_NOW.isoformat(), "bnd": "b"}
    others = [
        mint_token(make_settings(audit_key="another-audit-key"), record(), FIXED_NOW),
        mint_token(make_settings(assessment_link_key="a-separate-link-key"), record(), FIXED_NOW),
        mint_token(make_settings(public_base_url="https://elsewhere.test"), record(), FIXED_NOW),
        jwt.encode(claims, "", algorithm="none"),
        jwt.encode({k: v for k, v in claims.items() if k != "bnd"}, SETTINGS.assessment_link_signing_key()),
    ]
    for token in others:
        with pytest.raises(LinkRefused) as refused:
            read_token(SETTINGS, token, FIXED_NOW)
        assert refused.value.reason == "invalid-token"


def test_the_link_key_is_never_the_audit_key_and_can_be_set_apart() -> None:
    derived = SETTINGS.assessment_link_signing_key()
    assert len(derived) == 32
    assert b"test-audit-key" not in derived
    separate = make_settings(assessment_link_key="a-separate-link-key").assessment_link_signing_key()
    assert separate != derived


def test_every_card_gets_the_assessment_link_then_its_guideline() -> None:
    cards = [card(), card(uuid="u2", source={"label": "no url"}),
             card(uuid="u3", source={"label": "plain http", "url": "http://example.org/"})]
    linked = with_links(cards, record(locale="fr"), SETTINGS, FIXED_NOW)
    for sent in linked:
        page = sent["links"][0]
        assert page["type"] == "absolute"
        assert page["label"] == "Évaluation complète"
        assert page["url"].startswith(f"https://testserver/assessment/{record().hook_instance}?lang=fr&token=ey")
    assert linked[0]["links"][1] == {"label": "Reiter N et al. 2011", "url": "https://pubmed.ncbi.nlm.nih.gov/21679810/",
                                     "type": "absolute"}
    assert [len(c["links"]) for c in linked] == [2, 1, 1]
    assert cards[0].get("links") is None  # the handler's cards are not changed in place


def test_a_long_source_label_is_shortened_for_the_link() -> None:
    linked = with_links([card(source={"label": "x" * 300, "url": "https://doi.org/10.1/abc"})], record(), SETTINGS,
                        FIXED_NOW)
    assert len(linked[0]["links"][1]["label"]) == 80


def test_links_a_service_set_itself_come_first() -> None:
    own = {"label": "App", "url": "https://app.test/launch", "type": "smart"}
    linked = with_links([card(links=[own])], record(), SETTINGS, FIXED_NOW)
    assert linked[0]["links"][0] == own
    assert "/assessment/" in linked[0]["links"][1]["url"]


def test_the_audit_keeps_the_links_without_their_token() -> None:
    linked = with_links([card()], record(), SETTINGS, FIXED_NOW)
    kept = audited_cards(linked, SETTINGS)
    assert kept[0]["links"][0]["url"] == f"https://testserver/assessment/{record().hook_instance}?lang=en"
    assert kept[0]["links"][1] == linked[0]["links"][1]
    assert "token=" in linked[0]["links"][0]["url"]  # what is sent is untouched


def test_no_link_without_a_hook_instance_or_a_patient() -> None:
    assert with_links([card()], record(hook_instance=None), SETTINGS, FIXED_NOW) == [card()]
    assert with_links([card()], record(patient_ref=None), SETTINGS, FIXED_NOW) == [card()]


def test_received_at_round_trips_in_utc() -> None:
    paris = datetime(2026, 11, 21, 10, 0, tzinfo=UTC) + timedelta(microseconds=123)
    token = mint_token(SETTINGS, record(received_at=paris), FIXED_NOW)
    assert read_token(SETTINGS, token, FIXED_NOW).received_at == paris
