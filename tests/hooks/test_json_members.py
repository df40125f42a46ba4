"""Repeated member names are found by counting (hooks/json_members.py) exactly when the stdlib parser, told to
keep every pair, sees one: property-tested on documents with awkward names, escapes and whitespace."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hooks.json_members import NESTING_LIMIT, NestedTooDeeply, repeats_a_member_name

# Names and strings full of what could fool a byte count: quotes, backslashes, colons, spaces, non-ASCII.
_TEXT = st.text(alphabet=st.sampled_from(['"', "\\", ":", " ", "a", "b", "é", "\n", "\t", "\r", "\b", "\f", "\x00",
                                           "\x7f", "/", "\u2028"]),
                max_size=6)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), _TEXT)


def _pairs(children: Any) -> Any:
    # A list of (name, value) pairs: names may repeat, as a hostile or sloppy client would write them.
    return st.lists(st.tuples(_TEXT, children), max_size=5).map(lambda pairs: ("object", pairs))


_VALUE = st.recursive(_SCALAR, lambda children: st.one_of(st.lists(children, max_size=4), _pairs(children)),
                      max_leaves=25)


def _write(value: Any, rng: random.Random, ascii_only: bool) -> str:
    space = lambda: rng.choice(["", " ", "\n  ", "\t"])  # noqa: E731
    if isinstance(value, tuple) and value and value[0] == "object":
        members = [f"{space()}{json.dumps(name, ensure_ascii=ascii_only)}{space()}:{space()}"
                   f"{_write(child, rng, ascii_only)}{space()}" for name, child in value[1]]
        return "{" + ",".join(members) + space() + "}"
    if isinstance(value, list):
        return "[" + ",".join(space() + _write(child, rng, ascii_only) + space() for child in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


class _Repeated(Exception):
    pass


def _stdlib_sees_a_repeat(raw: bytes) -> bool:
    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in pairs}) != len(pairs):
            raise _Repeated
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=keep)
    except _Repeated:
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(value=_VALUE, seed=st.integers(0, 2**16), ascii_only=st.booleans())
def test_counting_agrees_with_the_stdlib_parser(value: Any, seed: int, ascii_only: bool) -> None:
    raw = _write(value, random.Random(seed), ascii_only).encode()
    assert repeats_a_member_name(raw, orjson.loads(raw)) == _stdlib_sees_a_repeat(raw)


@pytest.mark.parametrize(
    ("raw", "repeated"),
    [
        (b'{"a": 1, "a": 2}', True),
        (b'{"a": 1, "\\u0061": 2}', True),  # the same name, escaped: equal once decoded
        (b'{"a\\":": 1, "a": 2}', False),  # an escaped quote and a colon inside a name
        (b'{"a\\\\": 1, "a\\\\" : 2}', True),  # a name ending in a backslash, then whitespace
        (b'{"k": "\\" : x", "j": "\\\\"}', False),
        (b'[{"a": 1}, {"a": 2}]', False),  # the same name in two objects
        (b'{"x": {"a": 1, "b": {"a": 2}}}', False),
        (b'{"x": {"b": 1, "b": {"a": 2}}}', True),
        (b'["no", "objects"]', False),
        (b'{" :": 1, ":": 2, "\\u003a": 3}', True),  # names starting with a colon; one escaped
        (b'{" :": 1, ":": 2}', False),
        (b'{"a\\/": 1, "a/": 2}', True),  # an escaped solidus is the same name
    ],
)
def test_known_cases(raw: bytes, repeated: bool) -> None:
    assert repeats_a_member_name(raw, orjson.loads(raw)) is repeated
    assert _stdlib_sees_a_repeat(raw) is repeated


def test_nesting_past_the_limit_is_named() -> None:
    deep = b'{"a":' * (NESTING_LIMIT + 1) + b"1" + b"}" * (NESTING_LIMIT + 1)
    with pytest.raises(NestedTooDeeply):
        repeats_a_member_name(deep, orjson.loads(deep))
    shallow = b'{"a":' * 50 + b"1" + b"}" * 50
    assert repeats_a_member_name(shallow, orjson.loads(shallow)) is False
