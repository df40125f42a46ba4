"""Hook calls about the fixture patients, and the page links their cards carry."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fhir_builders import prefetch_for
from tests.hooks.engine.conftest import fixture_resources

SERVICE = "/cds-services/calcinosis-assessment"


def hook_request(fixture: str, hook_instance: str | None = None) -> tuple[str, dict[str, Any]]:
    """(patient id, a patient-view request with the fixture's data as prefetch)."""
    pid, resources = fixture_resources(fixture)
    body = {
        "hook": "patient-view",
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": pid},
        "prefetch": prefetch_for(resources),
    }
    return pid, body


def page_link(card: dict[str, Any]) -> str:
    """The path and query of the card's assessment link (the first link of every card)."""
    parts = urlsplit(card["links"][0]["url"])
    assert parts.path.startswith("/assessment/")
    return f"{parts.path}?{parts.query}"


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def with_token(link: str, token: str | None) -> str:
    path, _, query = link.partition("?")
    kept = [part for part in query.split("&") if not part.startswith("token=")]
    if token is not None:
        kept.append(f"token={token}")
    return f"{path}?{'&'.join(kept)}"
