"""Links from every card to its full assessment, and the signed token that lets only that caller open it.

A card's first ``link`` opens ``{CDS_PUBLIC_BASE_URL}/assessment/{hookInstance}?lang=..&token=..``; a second
one opens the guideline the card cites when ``card.source.url`` exists (the CDS Hooks sandbox opens links,
not ``source.url``). The token is an HS256 JWT, signed with ``Settings.assessment_link_signing_key()``,
that binds the hook instance, the instant the call was received, and (as one SHA-256 digest, so a URL
carries no patient id) the patient, the caller's ``iss`` and ``tenant`` and the service; it expires after
``CDS_ASSESSMENT_LINK_TTL_S``. It is the only credential the page accepts: whoever holds it may read that one
assessment until it expires, nothing else.

Tokens are deterministic (same call, clock and key: same token), so the README examples are exact. They
travel only in the card response; the audit trail stores the links without them (``audited_cards``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

import jwt

from hooks.audit.chain import canonical_json
from hooks.audit.codec import parse_time, utc_iso
from hooks.audit.records import HookCallRecord
from hooks.engine.knowledge import load_knowledge
from hooks.models import Link
from hooks.settings import Settings

__all__ = [
    "ASSESSMENT_PATH",
    "LinkClaims",
    "LinkRefused",
    "assessment_url",
    "audited_cards",
    "mint_token",
    "read_token",
    "with_links",
]

ASSESSMENT_PATH: Final = "/assessment"
_ALGORITHM: Final = "HS256"
_CLAIMS: Final = ("aud", "exp", "hi", "rcv", "bnd")
# Far longer than any token we mint (about 400 characters); a longer one is refused unread.
_MAX_TOKEN_CHARS: Final = 2048
_LABEL_CHARS: Final = 80


class LinkRefused(Exception):
    """The token does not open this page. ``reason`` is the audited class; never the token itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _binding(record: HookCallRecord) -> str:
    """Who and what the link is for, as a digest: the patient, the caller (iss, tenant) and the service."""
    bound = canonical_json([record.patient_ref, record.iss, record.tenant, record.service_id])
    return base64.urlsafe_b64encode(hashlib.sha256(bound).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class LinkClaims:
    hook_instance: str
    received_at: datetime
    binding: str
    expires_at: int

    def matches(self, record: HookCallRecord) -> bool:
        """The stored call is the one this token was minted for: same patient, same caller, same service."""
        return hmac.compare_digest(_binding(record), self.binding)


def _audience(settings: Settings) -> str:
    return settings.public_base_url + ASSESSMENT_PATH


def mint_token(settings: Settings, record: HookCallRecord, now: datetime) -> str:
    claims: dict[str, Any] = {
        "aud": _audience(settings),
        "exp": int(now.timestamp()) + settings.assessment_link_ttl_s,
        "hi": record.hook_instance,
        "rcv": utc_iso(record.received_at),
        "bnd": _binding(record),
    }
    return jwt.encode(claims, settings.assessment_link_signing_key(), algorithm=_ALGORITHM)


def read_token(settings: Settings, token: str | None, now: datetime) -> LinkClaims:
    """The claims of a token we signed, or ``LinkRefused``: missing, invalid (tampered, another key), expired."""
    if not token:
        raise LinkRefused("missing-token")
    if len(token) > _MAX_TOKEN_CHARS:
        raise LinkRefused("invalid-token")
    try:
        # Expiry is checked below against the service clock (injected in tests), not PyJWT's wall clock.
        claims = jwt.decode(token, settings.assessment_link_signing_key(), algorithms=[_ALGORITHM],
                            audience=_audience(settings),
                            options={"verify_exp": False, "require": list(_CLAIMS)})
        claims_ok = all(isinstance(claims[name], str) for name in ("hi", "rcv", "bnd"))
        received_at = parse_time(claims["rcv"]) if claims_ok else None
        expires_at = int(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError):
        raise LinkRefused("invalid-token") from None
    if received_at is None:
        raise LinkRefused("invalid-token")
    if now.timestamp() >= expires_at:
        raise LinkRefused("expired-token")
    return LinkClaims(hook_instance=claims["hi"], received_at=received_at, binding=claims["bnd"],
                      expires_at=expires_at)


def assessment_url(settings: Settings, hook_instance: str, locale: str, token: str | None) -> str:
    query = {"lang": locale, **({"token": token} if token else {})}
    return f"{_audience(settings)}/{quote(hook_instance, safe='')}?{urlencode(query)}"


def _label(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1].rstrip() + "…"


def with_links(cards: list[dict[str, Any]], record: HookCallRecord, settings: Settings,
               now: datetime) -> list[dict[str, Any]]:
    """The cards as they leave the service: each gets the assessment link, then its guideline's link.

    Called once the handler has answered, for every card of every service (the page falls back to the
    stored cards when a service keeps no assessment). Links the handler set itself come first, untouched.
    """
    if not cards or not record.hook_instance or not record.patient_ref:
        return cards
    locale = record.locale or settings.locale
    url = assessment_url(settings, record.hook_instance, locale, mint_token(settings, record, now))
    page = Link(label=load_knowledge().message("text", "full_assessment", locale), url=url, type="absolute")
    linked = []
    for card in cards:
        links = list(card.get("links") or [])
        links.append(page.model_dump(mode="json", exclude_none=True))
        source = card.get("source") or {}
        if isinstance(source.get("url"), str) and source["url"].startswith("https://"):
            guideline = Link(label=_label(str(source.get("label") or source["url"])), url=source["url"],
                             type="absolute")
            links.append(guideline.model_dump(mode="json", exclude_none=True))
        linked.append({**card, "links": links})
    return linked


def audited_cards(cards: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The cards as the audit trail keeps them: the assessment links without their token (a credential)."""
    prefix = _audience(settings) + "/"

    def kept(link: Any) -> Any:
        url = link.get("url") if isinstance(link, dict) else None
        if isinstance(url, str) and url.startswith(prefix) and "token=" in url:
            return {**link, "url": _without_token(url)}
        return link

    # Copies only what changes (the card, its links list, the assessment link): the response's cards are
    # never modified, and a deep copy of every card was a tenth of a call (issue 14).
    return [{**card, "links": [kept(link) for link in card["links"]]} if card.get("links") else card
            for card in cards]


def _without_token(url: str) -> str:
    path, _, query = url.partition("?")
    kept = "&".join(part for part in query.split("&") if not part.startswith("token="))
    return f"{path}?{kept}" if kept else path
