"""What the text of a body may not hold even when the schema decode accepted it: nesting deeper than
MAX_DEPTH (how deep a decoder can go depends on how deep its caller's stack already is, so the receiver
must not accept what the consumer, deeper in its own stack, cannot read); an object naming a key twice
(parsers disagree on which value wins, so what we validated need not be what a reader of the stored raw
JSON sees); numbers that not every reader can hold: beyond a double's range (RFC 8259's interoperable
numbers; the consumer reads fields it keeps as they are, through floats) or with digits below 10^-1000
(no SQL NUMERIC scale)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from itertools import accumulate, repeat
from typing import Any

import msgspec

from pipeline.formats.base import Problem, Rejection

# Beyond 10^±1000 an amount fits no SQL NUMERIC column; no real value comes near.
EXPONENT_LIMIT = 1000
# The largest double: a JSON number beyond it overflows every reader that decodes numbers as floats.
DOUBLE_MAX = Decimal("1.7976931348623157e308")
# Far beyond any vendor's documents (4 or 5 levels) and custom attributes, far below Python's recursion
# limit whatever the stack (serde_json's default; .NET's is 64).
MAX_DEPTH = 128
# Keys are echoed in the error's path; a hostile one may be megabytes long.
_KEY_ECHO_LIMIT = 64
# Shorter plain decimals cannot reach the limit, so they skip the Decimal parse.
_SHORT_NUMBER = 64


# Quotes, brackets and colons: all of a body's structure that the depth and the member count need.
_NOT_A_MARK = bytes(sorted(set(range(256)) - set(b'[]{}":')))
# One kind of bracket suffices: the schema decode accepted the body, so its brackets match.
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEP = bytes.maketrans(b"[]", b"\x02\x00")  # an opening bracket 2, a closing one 0; minus 1 each
# Digits and the other characters of a number's mantissa: an integer, or the mantissa of a float, is
# one run of them. Only a number with a run longer than _SHORT_NUMBER can be out of range unless it
# has an exponent (and only one that long is parsed).
_NUMBER_CHAR = bytes.maketrans(b"0123456789.-", b"\x01" * 12)
_LONG_NUMBER_RUN = b"\x01" * (_SHORT_NUMBER + 1)
# `bytes in bytes` first tries its left operand as an integer and formats a TypeError that it then drops
# (~1.8k instructions, 4 times per body here); an integer operand (one byte) or find() does not.
_BACKSLASH = ord("\\")
_EXPONENT = ord("E")


def _marks(body: bytes) -> bytes:
    """The body's quotes, colons and brackets (as [ and ]), with escaped quotes and backslashes gone so
    that every quote left opens or closes a string."""
    if _BACKSLASH in body:
        # Backslashes occur only in strings, where a run of them pairs up from its left as replace()
        # scans; a backslash left before a quote escapes it.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return body.translate(_SQUARE, _NOT_A_MARK)


def _too_deep(marks: bytes, limit: int) -> bool:
    if marks.count(b"[") <= limit:
        return False  # the usual case: too few brackets in all, quoted ones included
    nesting = marks.translate(None, b":")
    if nesting.count(b'"') == 2 * nesting.count(b'""'):
        nesting = nesting.translate(None, b'"')  # no string holds a bracket: counting is cheaper than split
    else:
        nesting = b"".join(nesting.split(b'"')[::2])
    return _height_exceeds(nesting, limit)


def _height_exceeds(nesting: bytes, limit: int) -> bool:
    """Whether matched brackets nest deeper than `limit`. Each replace() drops the innermost pairs, one
    level; while that halves the text (bushy documents) it costs less than a Python step per bracket."""
    while nesting:
        if limit <= 0:
            return True
        shorter = nesting.replace(b"[]", b"")
        limit -= 1
        if 2 * len(shorter) > len(nesting):  # a deep chain: one pass per level would be quadratic
            steps = map(int.__sub__, shorter.translate(_STEP), repeat(1))
            return max(accumulate(steps, initial=0)) > limit
        nesting = shorter
    return False


def depth_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`, strings aside. Only for parsed JSON."""
    return _too_deep(_marks(body), limit)


class _Offence(Exception):
    """Stops the exact pass at the first offence; the slow pass then finds where it is."""


def exponent_in_range(amount: Decimal) -> bool:
    """Finite, and neither its magnitude nor its last digit beyond 10^±EXPONENT_LIMIT."""
    if not amount.is_finite():
        return False
    exponent = amount.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -EXPONENT_LIMIT and amount.adjusted() <= EXPONENT_LIMIT


def _number_in_range(text: str) -> bool:
    if len(text) <= _SHORT_NUMBER and "e" not in text and "E" not in text:
        return True
    try:
        number = Decimal(text)
    except InvalidOperation:
        return False
    return exponent_in_range(number) and abs(number) <= DOUBLE_MAX


# Built once: a Decoder per call (for a per-call float_hook list) was 2.4 % of the receiver's
# instructions per single-event request. Both are stateless: Decimal keeps each float exactly, and
# the encoder writes it back as str(Decimal), in exponent notation exactly when the number needs a look.
_TREE_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_TREE_ENCODER = msgspec.json.Encoder(decimal_format="number")
_NUMBER = re.compile(r"-?[0-9][0-9.E+-]*")  # in the encoder's text outside strings


def _outside_strings(text: bytes) -> bytes:
    """msgspec's encoded text without its strings: numbers, literals and structure."""
    if _BACKSLASH in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")  # as in _marks
    return b"".join(text.split(b'"')[::2])


def _surely_clean(body: bytes, marks: bytes) -> bool:
    """True only if the body holds no duplicate key and no number out of range; False when unsure.
    Cheap because it makes no Python call per object or number: msgspec parses, C counts."""
    if body.translate(_NUMBER_CHAR).find(_LONG_NUMBER_RUN) != -1:
        # An integer msgspec hands over as an int, its text gone; a mantissa that could reach past a
        # double or below 10^-1000 (or such a run inside a string).
        return False
    try:
        encoded = _TREE_ENCODER.encode(_TREE_DECODER.decode(body))  # dicts keep the last of a key
    except (msgspec.DecodeError, RecursionError):
        return False  # msgspec refuses texts the stdlib parser reads: lone surrogates
    # Without a float in exponent notation every float has at most 64 mantissa digits (the run above),
    # an exponent <= 0 and an adjusted exponent >= -6: below 10^64, no digit below 10^-69, in range.
    # With one, the numbers are looked at: str(Decimal) has the literal's value and exponent.
    if (
        _EXPONENT in encoded
        and _EXPONENT in (outside := _outside_strings(encoded))
        and not all(map(_number_in_range, _NUMBER.findall(outside.decode())))
    ):
        return False
    if _BACKSLASH in body and (body.find(b"\\u003a") != -1 or body.find(b"\\u003A") != -1):
        return False  # an escaped colon decodes to a real one: the counts below would not match
    # Each member has one colon outside strings and strings keep theirs: a key named twice makes the
    # re-encoded tree at least one colon short of the body.
    return encoded.count(b":") == marks.count(b":")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len(dict(pairs)) != len(pairs):  # dict() runs in C: the cheapest count of keys
        raise _Offence
    return None  # nothing is kept: the exact pass only looks


def _number(text: str) -> None:
    if not _number_in_range(text):
        raise _Offence


def check(body: bytes) -> None:
    """Raises Rejection(INVALID) naming the path of a duplicate key or out-of-range number (an object is
    looked at before what it holds, siblings in document order).
    Only for bodies the schema decode has accepted (valid UTF-8 JSON without NaN or Infinity)."""
    marks = _marks(body)
    if _too_deep(marks, MAX_DEPTH):
        raise Rejection(Problem.MALFORMED, f"JSON is nested too deeply (more than {MAX_DEPTH} levels)")
    if not _surely_clean(body, marks):
        _check_exactly(body)


def _check_exactly(body: bytes) -> None:
    """The stdlib parser with a Python call per object and number: slow, but it decides every body the
    cheap pass is unsure of, the same way whichever way it was unsure."""
    try:
        json.loads(body, object_pairs_hook=_unique_pairs, parse_int=_number, parse_float=_number)
    except _Offence:
        raise _locate(body) from None
    except RecursionError:
        raise Rejection(Problem.MALFORMED, "JSON is nested too deeply") from None
    except ValueError as exc:  # the stdlib parser is stricter than msgspec somewhere
        raise Rejection(Problem.MALFORMED, f"body is not valid JSON: {exc.args[0]}") from None


class _Object(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept."""


class _Number(str):
    """A number's literal text."""


def _echo(key: str) -> str:
    return key if len(key) <= _KEY_ECHO_LIMIT else key[:_KEY_ECHO_LIMIT] + "…"


def _nodes(tree: Any) -> Iterator[tuple[str, Any]]:
    """(path, node) in document order, without recursion: the tree may be as deep as the parser allows."""
    stack: list[tuple[str, Any]] = [("$", tree)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, _Object):
            stack.extend((f"{path}.{_echo(key)}", value) for key, value in reversed(node))
        elif isinstance(node, list):
            stack.extend((f"{path}[{index}]", value) for index, value in reversed(list(enumerate(node))))


def _locate(body: bytes) -> Rejection:
    tree = json.loads(body, object_pairs_hook=_Object, parse_int=_Number, parse_float=_Number)
    for path, node in _nodes(tree):
        if isinstance(node, _Object):
            seen: set[str] = set()
            for key, _ in node:
                if key in seen:
                    return Rejection(Problem.INVALID, f"duplicate key `{_echo(key)}`", f"{path}.{_echo(key)}")
                seen.add(key)
        elif isinstance(node, _Number) and not _number_in_range(node):
            return Rejection(Problem.INVALID, "number out of range (beyond a double's ±1.8e308)", path)
    raise AssertionError("the fast pass found an offence the slow pass does not")
