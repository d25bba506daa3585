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


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes and all
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # an opening bracket 2, a closing one 0; minus 1 each


def depth_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`, strings aside."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the usual case: too few brackets in all, quoted ones included
    brackets = _STRING.sub(b"", body).translate(None, _NOT_A_BRACKET)
    return bool(brackets) and max(accumulate(map(int.__sub__, brackets.translate(_STEP), repeat(1)))) > limit


class _Offence(Exception):
    """Stops the fast pass at the first offence; the slow pass then finds where it is."""


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


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len(dict(pairs)) != len(pairs):  # dict() runs in C: the cheapest count of keys
        raise _Offence
    return None  # nothing is kept: the fast pass only looks


def _number(text: str) -> None:
    if not _number_in_range(text):
        raise _Offence


def check(body: bytes) -> None:
    """Raises Rejection(INVALID) naming the path of a duplicate key or out-of-range number (an object is
    looked at before what it holds, siblings in document order).
    Only for bodies the schema decode has accepted (valid UTF-8 JSON without NaN or Infinity)."""
    if depth_exceeds(body):
        raise Rejection(Problem.MALFORMED, f"JSON is nested too deeply (more than {MAX_DEPTH} levels)")
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
