"""The FHIR allow-list (security brief §2.3, SSRF): which ``fhirServer`` values and URLs may be requested.

``fhirServer`` must match an allowed base exactly in scheme, host and port and lie under its path prefix after
normalisation; https only, plain http on loopback only when ``fhir_allow_loopback_http`` is set; ``next``
links must stay under ``fhirServer``. ``origin_of`` gives the (scheme, host, port) key that the breaker, the
slot limits and the connection pools use: paths under one origin share one server and one set of sockets.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import httpx

from hooks.settings import is_loopback_host

__all__ = ["base_allowed", "normalise_base", "origin_of", "within_base"]

_DEFAULT_PORTS = {"https": 443, "http": 80}


def normalise_base(url: str) -> str | None:
    """``scheme://host:port/path`` with lower-case scheme and host, explicit port, no trailing slash.

    None for anything that cannot be a FHIR base: not http(s), user info, query, fragment, dot segments or
    encoded separators in the path (they would let a template token walk out of the base).

    Dot segments count with path parameters too: Tomcat, Jetty and Spring strip ``;...`` from a segment
    before resolving it, so ``/fhir/..;/admin`` (or ``%2e%2e;``) reaches ``/admin`` there. ``%25`` is refused
    outright: a server or proxy that decodes twice turns ``%252e%252e`` into ``..`` after our check.
    """
    try:
        stripped = url.strip()
        # Any "@" in the authority, even with an empty user ("https://@host"): parsers disagree about it.
        if "@" in urlsplit(stripped).netloc:
            return None
        parsed = httpx.URL(stripped)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host or parsed.userinfo or parsed.query or parsed.fragment:
        return None
    raw_path = parsed.raw_path.decode("ascii", "replace")
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%25" in lowered or "\\" in raw_path:
        return None
    segments = [s for s in unquote(raw_path).split("/") if s]
    if any(s.split(";", 1)[0] in {".", ".."} for s in segments):
        return None
    port = parsed.port or _DEFAULT_PORTS[scheme]
    host = parsed.host.lower()
    if ":" in host:
        host = f"[{host}]"
    path = "/" + "/".join(segments) if segments else ""
    return f"{scheme}://{host}:{port}{path}"


def origin_of(url: str | httpx.URL) -> str:
    """``scheme://host:port`` (lower case, explicit port, IPv6 in brackets): the key of one FHIR server."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    scheme = parsed.scheme.lower()
    host = parsed.host.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{parsed.port or _DEFAULT_PORTS.get(scheme, 0)}"


def within_base(url: str, base: str) -> bool:
    """True when ``url`` (a full URL, query allowed) lies at or under the normalised ``base``."""
    try:
        if "@" in urlsplit(url).netloc:
            return False
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    if parsed.fragment or parsed.userinfo:
        return False
    without_query = str(parsed.copy_with(query=None))
    normalised = normalise_base(without_query)
    if normalised is None:
        return False
    return normalised == base or normalised.startswith(base + "/")


def base_allowed(fhir_server: str, allowed_bases: tuple[str, ...], *, allow_loopback_http: bool) -> str | None:
    """The normalised ``fhirServer`` when it may be queried, else None (no request is made at all)."""
    normalised = normalise_base(fhir_server)
    if normalised is None:
        return None
    if normalised.startswith("http://"):
        host = httpx.URL(normalised).host
        if not (allow_loopback_http and is_loopback_host(host)):
            return None
    for allowed in allowed_bases:
        candidate = normalise_base(allowed)
        if candidate and (normalised == candidate or normalised.startswith(candidate + "/")):
            return normalised
    return None
