"""Whether a JSON document repeats a member name in one of its objects, mostly without parsing it twice.

RFC 8259 §4: names SHOULD be unique; parsers disagree on which duplicate wins, so an intermediary and this
service could read different requests, and such a request is refused. The stdlib parser with an
``object_pairs_hook`` took 224 µs per 24 KiB call (issue 14); counting colons takes 35:

orjson keeps one member per name, and re-serialises every string with the same bytes a document has when it
uses no ``\\uXXXX`` and no ``\\/`` escape (``\\"``, ``\\\\``, ``\\b``, ``\\f``, ``\\n``, ``\\r``,
``\\t`` and raw UTF-8 are written alike). Outside strings a colon follows each member name and nothing else.
So the document and orjson's copy hold as many colons exactly when orjson dropped no member (a dropped
member takes its colon away, and its strings can only take more). Documents with those two escapes go to
the stdlib parser.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["NESTING_LIMIT", "NestedTooDeeply", "repeats_a_member_name"]

# orjson serialises at most this many levels of arrays and objects (it parses up to 1,024).
NESTING_LIMIT = 254


class NestedTooDeeply(ValueError):
    """The document nests arrays and objects deeper than NESTING_LIMIT (no CDS Hooks request comes near)."""


class _Repeated(ValueError):
    pass


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _Repeated
    return document


def repeats_a_member_name(raw: bytes, parsed: Any) -> bool:
    """``raw`` is valid JSON (orjson parsed it into ``parsed``); True when one of its objects repeats a name.

    Raises NestedTooDeeply past NESTING_LIMIT levels.
    """
    try:
        kept = orjson.dumps(parsed)
    except TypeError:  # orjson's "Recursion limit reached": the same limit whatever the document holds
        raise NestedTooDeeply from None
    if b":" not in raw:
        return False
    if b"\\" in raw and (b"\\u" in raw or b"\\/" in raw):
        try:
            json.loads(raw, object_pairs_hook=_refuse_repeats)
        except _Repeated:
            return True
        return False
    return raw.count(b":") != kept.count(b":")
