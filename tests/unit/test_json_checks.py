"""What the text check refuses after the schema decode: nesting deeper than 128 levels, a key named twice
anywhere, a number beyond a double's range or with digits below 10^-1000 anywhere; each with the path of
the offence found first."""

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
        pytest.param(b'{"n": 1' + b"0" * 300 + b"}", id="10**300"),
        pytest.param(b'{"n": -1.7976931348623157e308, "m": 1e-1000, "z": 0.0}', id="at-the-bounds"),
        pytest.param(b'{"n": 18446744073709551616}', id="beyond-64-bits"),
        pytest.param(b"[" * 128 + b"]" * 128, id="nested-128"),
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
        pytest.param(b'{"a": [1, 1' + b"0" * 309 + b"]}", "$.a[1]", "out of range", id="10**309"),
        pytest.param(b'{"a": 1e309}', "$.a", "out of range", id="1e309"),
        pytest.param(b'{"a": -1.8e308}', "$.a", "out of range", id="-1.8e308"),
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


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 129 + b"]" * 129, id="arrays"),
        pytest.param(b'{"a":' * 129 + b"1" + b"}" * 129, id="objects"),
        pytest.param(b'{"x": "]]]]", "a": ' + b"[" * 200 + b"]" * 200 + b"}", id="after-a-string-of-closers"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k"),
    ],
)
def test_nesting_beyond_128_is_malformed(body: bytes) -> None:
    with pytest.raises(Rejection) as refused:
        json_checks.check(body)
    assert refused.value.problem is Problem.MALFORMED
    assert "nested too deeply" in refused.value.message


def test_brackets_in_strings_do_not_count() -> None:
    quoted = {"a": "[{" * 500, "b": "\\", "c": '"[[[[', "d": "]]]]" * 200}
    json_checks.check(json.dumps({**quoted, "deep": [[[[1]]]]}).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def nesting(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


bracketed_json = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab:,', max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet="[]{}ab", max_size=4), children, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(bracketed_json, st.integers(min_value=0, max_value=6))
def test_depth_is_the_parsed_nesting_whatever_the_strings_hold(value: object, limit: int) -> None:
    assert json_checks.depth_exceeds(json.dumps(value).encode(), limit) == (nesting(value) > limit)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_what_a_json_encoder_writes_passes(value: object) -> None:
    """An encoder never repeats a key, and hypothesis's numbers are all in range."""
    json_checks.check(json.dumps(value).encode())
