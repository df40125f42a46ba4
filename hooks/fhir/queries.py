"""Building and naming FHIR queries: the URL sent, and the relative query the audit records (never the token)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urljoin

import httpx

__all__ = ["encode_query", "is_read", "join_link", "relative_query", "resource_type", "with_count"]

# RFC 3986 query characters (pchar / "/" / "?") and existing %XX escapes pass; anything else is escaped.
_QUERY_SAFE = "-._~!$&'()*+,;=:@/?"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def resource_type(relative: str) -> str:
    return relative.split("?", 1)[0].split("/", 1)[0] or "?"


def is_read(relative: str) -> bool:
    path = relative.split("?", 1)[0].strip("/")
    return "?" not in relative and path.count("/") == 1


def relative_query(url: str, base: str) -> str:
    """What the audit records: the query relative to the base (search parameters, never the token)."""
    parsed = httpx.URL(url)
    path = parsed.raw_path.decode("ascii", "replace")
    prefix = httpx.URL(base).raw_path.decode("ascii", "replace").rstrip("/")
    return path[len(prefix) :].lstrip("/") if path.startswith(prefix) else path


def with_count(relative: str, count: int) -> str:
    """A search without ``_count`` gets one: the result set is the same (R45), the page count smaller."""
    if count <= 0 or is_read(relative):
        return relative
    # Parameter names, not a substring: "x_count=5" or a value holding "_count=" is not a page size.
    if any(name == "_count" for name, _ in parse_qsl(relative.partition("?")[2], keep_blank_values=True)):
        return relative
    return f"{relative}{'&' if '?' in relative else '?'}_count={count}"


def join_link(fhir_server: str, link: str) -> str | None:
    """A ``next`` link resolved against the base; None when it is not even a URL (e.g. "http://[::1")."""
    try:
        return urljoin(fhir_server.rstrip("/") + "/", link)
    except ValueError:
        return None


def encode_query(url: str) -> str:
    """Percent-encode what RFC 3986 does not allow in a query (``|`` of ``system|code``, spaces, braces).

    httpx sends ``|`` as it is, and some gateways refuse it (issue 11). Existing escapes are kept, so a
    server's own ``next`` link is never double-encoded.
    """
    head, mark, query = url.partition("?")
    if not mark:
        return url
    parts = _ESCAPE.split(query)
    escapes = _ESCAPE.findall(query)
    encoded = "".join(quote(part, safe=_QUERY_SAFE) + (escapes[i] if i < len(escapes) else "")
                      for i, part in enumerate(parts))
    return f"{head}?{encoded}"
