"""Helpers every vendor format uses: one-pass decoding with msgspec turned into Rejections that name
the field path, timestamp parsing, reply encoding."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import msgspec

from pipeline.formats import json_checks
from pipeline.formats.base import Problem, Rejection, Reply

T = TypeVar("T")

_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
# A __post_init__ check names its field first (`unitPrice` must be ...); msgspec gives the object's path.
_FIELD_FIRST = re.compile(r"^`(\w+)` ")

json_encode = msgspec.json.Encoder().encode


def decode(decoder: msgspec.json.Decoder[T], body: bytes, *, check_text: bool = True) -> T:
    """Decode and validate in one pass. Raises Rejection: MALFORMED for bytes that are not JSON (or not
    UTF-8, or nested beyond reason), MISSING_FIELD / INVALID with the offending path otherwise, INVALID
    for a duplicate key or a number out of range anywhere (json_checks; `check_text=False` when another
    decode of the same body already checked it)."""
    try:
        # msgspec does not check UTF-8 inside values it skips; a receiver must not pass such bytes on.
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(Problem.MALFORMED, f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        decoded = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_rejection(exc) from exc
    except msgspec.DecodeError as exc:
        raise Rejection(Problem.MALFORMED, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise Rejection(Problem.MALFORMED, "JSON is nested too deeply") from exc
    if check_text:
        json_checks.check(body)
    return decoded


def validation_rejection(exc: msgspec.ValidationError) -> Rejection:
    message = str(exc)
    match = _PATH.search(message)
    path = match.group(1) if match else "$"
    missing = _MISSING.match(message)
    if missing:
        return Rejection(Problem.MISSING_FIELD, message, f"{path}.{missing.group(1)}")
    field = _FIELD_FIRST.match(message)
    if field:
        path = f"{path}.{field.group(1)}"
    return Rejection(Problem.INVALID, message, path)


def describe(rejection: Rejection) -> str:
    """The rejection's message ending with the full path of the offending field."""
    core = _PATH.sub("", rejection.message)
    return f"{core} - at `{rejection.path}`" if rejection.path else core


class Money(Decimal):
    """An exact, finite amount from a JSON number or a numeric string."""


def parse_money(value: Any) -> Money:
    """JSON numbers arrive as Decimal (the decoders' float_hook) or int; SDKs also send numeric strings."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise TypeError("Expected a number")
    try:
        amount = Money(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        raise ValueError("Expected a number") from None
    if not amount.is_finite():
        raise ValueError("Expected a finite number")
    if not json_checks.exponent_in_range(amount):
        raise ValueError("Number out of range")
    return amount


def parse_iso8601(value: str) -> datetime:
    """ISO 8601 / RFC 3339 with or without an offset (without one it is taken as UTC), returned in UTC.
    Raises ValueError."""
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def from_epoch_seconds(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def from_epoch_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=json_encode(payload), headers=headers or {})


def retry_headers(rejection: Rejection) -> dict[str, str]:
    return {"Retry-After": str(rejection.retry_after)} if rejection.retry_after is not None else {}


def generic_error(status: int, rejection: Rejection) -> Reply:
    """For vendors that document no JSON error body."""
    return json_reply(
        status,
        {"error": {"code": rejection.problem.value, "message": rejection.message, "path": rejection.path}},
        retry_headers(rejection),
    )


# The HTTP status of each problem where a vendor has no documented status of its own.
DEFAULT_STATUS: dict[Problem, int] = {
    Problem.UNAUTHENTICATED: 401,
    Problem.INVALID_CREDENTIALS: 401,
    Problem.FORBIDDEN: 403,
    Problem.MALFORMED: 400,
    Problem.INVALID: 400,
    Problem.MISSING_FIELD: 400,
    Problem.EMPTY: 400,
    Problem.EVENT_TIME: 400,
    Problem.UNSUPPORTED_PROPERTY: 400,
    Problem.TOO_LARGE: 413,
    Problem.UNSUPPORTED_MEDIA_TYPE: 415,
    Problem.TIMEOUT: 408,
    Problem.RATE_LIMITED: 429,
    Problem.UNAVAILABLE: 503,
    Problem.INTERNAL: 500,
}
