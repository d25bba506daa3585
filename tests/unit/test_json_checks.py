"""What the text check refuses after the schema decode: nesting deeper than 128 levels, a key named twice
anywhere, a number beyond a double's range or with digits below 10^-1000 anywhere; each with the path of
the offence found first."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate, repeat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats import json_checks
from pipeline.formats.base import Problem, Rejection
from tests.corpus import load_cases
from tests.mutations import json_scalars


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


# The check as it was before the cheap pass: a regex over every string for the depth, then the stdlib
# parser with a Python call per object and number. The cheap pass must decide every body as it did.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def _depth_exceeds_reference(body: bytes, limit: int) -> bool:
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_A_BRACKET)
    return bool(brackets) and max(accumulate(map(int.__sub__, brackets.translate(_STEP), repeat(1)))) > limit


def _check_reference(body: bytes) -> None:
    if _depth_exceeds_reference(body, json_checks.MAX_DEPTH):
        raise Rejection(
            Problem.MALFORMED, f"JSON is nested too deeply (more than {json_checks.MAX_DEPTH} levels)"
        )
    try:
        json.loads(
            body,
            object_pairs_hook=json_checks._unique_pairs,
            parse_int=json_checks._number,
            parse_float=json_checks._number,
        )
    except json_checks._Offence:
        raise json_checks._locate(body) from None
    except RecursionError:
        raise Rejection(Problem.MALFORMED, "JSON is nested too deeply") from None
    except ValueError as exc:
        raise Rejection(Problem.MALFORMED, f"body is not valid JSON: {exc.args[0]}") from None


def _outcome(check: Callable[[bytes], None], body: bytes) -> tuple[Problem, str, str | None] | None:
    try:
        check(body)
    except Rejection as refused:
        return refused.problem, refused.message, refused.path
    return None


def _all_escaped(text: str) -> str:
    """A JSON string naming `text` with every character a \\uXXXX escape (surrogate pairs and all)."""
    units = text.encode("utf-16-be")
    return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'


@st.composite
def _string_texts(draw: st.DrawFn, text: st.SearchStrategy[str]) -> str:
    """One string written plainly, ASCII-escaped or escaped throughout: equal keys that differ in text."""
    value = draw(text)
    return draw(
        st.sampled_from([json.dumps(value, ensure_ascii=False), json.dumps(value), _all_escaped(value)])
    )


@st.composite
def _number_texts(draw: st.DrawFn) -> str:
    """Numbers as a client may write them: long, tiny, signed, with exponents near every limit."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(
        st.sampled_from(["0", "1", "17976931348623157", "18"])
        | st.integers(1, 5000).map(lambda n: "1" + "0" * n)
    )
    fraction = draw(
        st.sampled_from(["", ".0", ".5", "." + "0" * 1200 + "1"])
        | st.integers(1, 80).map(lambda n: "." + "9" * n)
    )
    exponent = draw(
        st.sampled_from(["", "e", "E", "e+", "e-", "E-"]).flatmap(
            lambda mark: (
                st.just("")
                if not mark
                else st.sampled_from([0, 5, 291, 292, 308, 309, 999, 1000, 1001, 999999]).map(
                    lambda n: f"{mark}{n}"
                )
            )
        )
    )
    return sign + whole + fraction + exponent


# Few key letters, so that objects often name a key twice; ones that look like JSON's own marks.
_KEYS = st.text(alphabet='a:{}[]"\\, é\U0001f600', max_size=3)
_WHITESPACE = st.sampled_from(["", " ", "\n\t ", "\r\n  "])
_leaves = (
    json_scalars.map(lambda value: json.dumps(value, ensure_ascii=False))
    | _number_texts()
    | _string_texts(st.text(alphabet='ab:{}[]"\\/\n\x01 é\u2028\U0001f600', max_size=8))
)


@st.composite
def _members(draw: st.DrawFn, children: st.SearchStrategy[str]) -> str:
    space = draw(_WHITESPACE)
    members = draw(st.lists(st.tuples(_string_texts(_KEYS), children), max_size=4))
    return "{" + space + ",".join(f"{key}{space}:{space}{value}" for key, value in members) + space + "}"


_json_texts = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]") | _members(children)
    ),
    max_leaves=12,
)


@st.composite
def _bodies(draw: st.DrawFn) -> str:
    """A JSON text, now and then inside arrays and objects nested about as deep as the limit (and a
    duplicate key all the way down: the depth is refused first)."""
    if draw(st.integers(0, 7)):
        levels = draw(st.integers(0, 2))
        opener = draw(st.sampled_from(["[", '{"k":']))
    else:
        levels = draw(st.integers(json_checks.MAX_DEPTH - 2, json_checks.MAX_DEPTH + 1))
        opener = draw(st.sampled_from(["[", '{"k":', '{"k":1,"k":']))
    closer = "]" if opener == "[" else "}"
    space = draw(_WHITESPACE)
    return opener * levels + space + draw(_json_texts) + space + closer * levels


@settings(max_examples=1500, deadline=None)
@given(_bodies())
def test_the_cheap_pass_decides_as_the_hook_parser_did(text: str) -> None:
    body = text.encode()
    assert _outcome(json_checks.check, body) == _outcome(_check_reference, body)


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        pytest.param(rb'{"a": 1, "\u0061": 2}', "duplicate key `a`", id="equal-after-escapes"),
        pytest.param(rb'{"\u003a": 1, ":": 2}', "duplicate key `:`", id="escaped-colon-twice"),
        pytest.param(rb'{"\u003a": 1, "\u003A": 2, "b": 3}', "duplicate key `:`", id="escaped-colons"),
        pytest.param(rb'{"\u003a": 1, "b": 2}', None, id="escaped-colon-once"),
        pytest.param(
            rb'{"a\"": {"\\": 1}, "a\\": {"\"": ":{\"a\":1,\"a\":2}"}}', None, id="quotes-and-backslashes"
        ),
        pytest.param(rb'{"a\\": 1, "a\\": 2}', "duplicate key `a\\`", id="backslash-key-twice"),
        pytest.param(b'{"k": {}, "j": {}, "m": [{}, []]}', None, id="empty-objects"),
        pytest.param(b'{"k": {}, "k": {}}', "duplicate key `k`", id="empty-objects-twice"),
        pytest.param(b' \n\t"top" \r\n', None, id="top-level-string"),
        pytest.param(b"-0", None, id="minus-zero"),
        pytest.param(b"1E400", "out of range", id="1E400-top-level"),
        pytest.param(b"[1e-1001]", "out of range", id="1e-1001"),
        pytest.param(b"[1.5e3, 2E-5, -0.0e0]", None, id="exponents-in-range"),
        pytest.param(b'{"id": "' + b"7" * 400 + b'"}', None, id="digits-in-a-string"),
        pytest.param(b"[" + b"7" * 300 + b"]", None, id="300-digit-integer"),
        pytest.param(b"[" + b"7" * 5000 + b"]", "out of range", id="5000-digit-integer"),
        pytest.param(b'{"s": "\xf0\x9f\x98\x80:{[", "s": 1}', "duplicate key `s`", id="unicode-and-marks"),
    ],
)
def test_edge_cases_decide_as_the_hook_parser_did(body: bytes, outcome: str | None) -> None:
    found = _outcome(json_checks.check, body)
    assert found == _outcome(_check_reference, body)
    if outcome is None:
        assert found is None
    else:
        assert found is not None and outcome in found[1]


def test_corpus_bodies_take_the_cheap_pass() -> None:
    """No vendor's document needs the slow parse: it only runs for bodies with an offence in them."""
    bodies = [case.body for case in load_cases() if case.body_json is not None]
    assert bodies
    for body in bodies:
        assert json_checks._surely_clean(body, json_checks._marks(body)), body[:80]
