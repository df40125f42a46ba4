"""Who is calling: the ``CallerVerifier`` seam (CDS Hooks 2.0 #trusting-cds-clients).

Development mode uses ``NoAuth`` (loud, loopback only). Everything else verifies the EHR's JWT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

__all__ = ["ANONYMOUS", "Caller", "CallerVerifier", "NoAuth"]


@dataclass(frozen=True, slots=True)
class Caller:
    authenticated: bool
    iss: str | None = None
    tenant: str | None = None
    jti: str | None = None
    kid: str | None = None
    alg: str | None = None
    sub: str | None = None
    # FHIR bases this issuer may point fhirServer at (trust file ``fhir_servers``); feeds the SSRF allow-list.
    fhir_servers: tuple[str, ...] = ()


ANONYMOUS = Caller(authenticated=False)


class CallerVerifier(Protocol):
    async def verify(self, request: Request, endpoint_url: str, *, required: bool) -> Caller:
        """Return the verified caller, or raise ``hooks.errors.Unauthorized``.

        ``endpoint_url`` is the exact URL the JWT ``aud`` must equal (public base URL + path).
        With ``required=False`` a request without an Authorization header is ANONYMOUS, but a
        header that is present must still verify.
        """


class NoAuth:
    """Development only: accepts every call as anonymous."""

    async def verify(self, request: Request, endpoint_url: str, *, required: bool) -> Caller:
        return ANONYMOUS
