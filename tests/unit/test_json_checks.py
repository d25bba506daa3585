"""What the text check refuses after the schema decode: a key named twice anywhere, a number beyond
10^±1000 anywhere; each with the path of the offence found first."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats import json_checks
from pipeline.formats.base import Problem, Rejection


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"a": 1, "b": [1, 2.5, -3e10, {"a": 1}], "c": {"d": null}}', id="ordinary"),
        pytest.param(b'{"same": {"x": 1}, "other": {"x": 1}}', id="same-key-in-sibling-objects"),
        pytest.param(b'{"n": 1' + b"0" * 1000 + b"}", id="10**1000"),
        pytest.param(b'{"n": 1e1000, "m": -1e-1000, "z": 0.0}', id="exponents-at-the-bound"),
        pytest.param(b'{"n": 18446744073709551616}', id="beyond-64-bits"),
        pytest.param(b"[" * 500 + b"]" * 500, id="nested-500"),
    ],
)
def test_accepted(body: bytes) -> None:
    json_checks.check(body)


@pytest.mark.parametrize(
    ("body", "path", "says"),
    [
        pytest.param(b'{"a": 1, "a": 2}', "$.a", "duplicate key", id="top-level"),
        pytest.param(
            b'{"x": [{"k": 1}, {"k": 1, "j": 2, "k": 3}]}', "$.x[1].k", "duplicate key", id="nested"
        ),
        pytest.param(b'{"a": {"b": 1, "b": 1}, "a": 2}', "$.a", "duplicate key", id="outer-object-first"),
        pytest.param(b'{"a": [1, 1' + b"0" * 1001 + b"]}", "$.a[1]", "out of range", id="10**1001"),
        pytest.param(b'{"a": 1e1001}', "$.a", "out of range", id="1e1001"),
        pytest.param(b'{"a": 1e-1001}', "$.a", "out of range", id="1e-1001"),
        pytest.param(b'{"a": -1e999999}', "$.a", "out of range", id="-1e999999"),
        pytest.param(b'[{"ok": 1}, {"n": 0.' + b"0" * 1200 + b"1}]", "$[1].n", "out of range", id="tiny"),
    ],
)
def test_refused_with_the_path(body: bytes, path: str, says: str) -> None:
    with pytest.raises(Rejection) as refused:
        json_checks.check(body)
    assert refused.value.problem is Problem.INVALID
    assert refused.value.path == path
    assert says in refused.value.message


def test_a_huge_key_is_not_echoed_whole() -> None:
    key = b'"' + b"k" * 100_000 + b'"'
    with pytest.raises(Rejection) as refused:
        json_checks.check(b"{" + key + b": 1, " + key + b": 2}")
    assert len(refused.value.message) < 200
    assert len(refused.value.path or "") < 200


def test_nesting_beyond_the_parser_is_malformed() -> None:
    with pytest.raises(Rejection) as refused:
        json_checks.check(b"[" * 100_000 + b"]" * 100_000)
    assert refused.value.problem is Problem.MALFORMED


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_what_a_json_encoder_writes_passes(value: object) -> None:
    """An encoder never repeats a key, and hypothesis's numbers are all in range."""
    json_checks.check(json.dumps(value).encode())
