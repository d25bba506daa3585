"""Showing stored events: a fixed-width table for people, one JSON object per line for machines.
Pure functions.

The table shows who did what to which product when, and leaves out what holds personal data or free
text (attributes, raw, items, placement, search_query); a user id that is an email address or a
phone number is masked. `--json` prints every column as stored. Client-sent text reaches the
terminal with its control characters escaped, so an event id cannot move the cursor or retitle the
window."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from consumers.sinks.reader import StoredEvent

_json = msgspec.json.Encoder(decimal_format="number")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+[\d\s().-]{7,20}")


def ndjson(event: StoredEvent) -> str:
    """Every column: times in UTC (RFC 3339), price an exact JSON number, the JSON columns as stored."""
    return _json.encode(event.values).decode()


def shown_id(value: str) -> str:
    if _EMAIL.fullmatch(value):
        return "<email>"
    if _PHONE.fullmatch(value):
        return "<phone>"
    return value


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(v: dict[str, Any]) -> str:
    if v["user_id"] is not None:
        return shown_id(v["user_id"])
    if v["anonymous_id"] is not None:
        return "anon " + shown_id(v["anonymous_id"])
    return ""


def _product(v: dict[str, Any]) -> str:
    if v["product_id"] is not None:
        return str(v["product_id"])
    ids = v["product_ids"] or []
    if ids:
        return str(ids[0]) + (f" +{len(ids) - 1}" if len(ids) > 1 else "")
    return ""


def _price(v: dict[str, Any]) -> str:
    if v["price"] is None:
        return ""
    return f"{v['price']} {v['currency']}" if v["currency"] else str(v["price"])


def _text(column: str) -> Callable[[dict[str, Any]], str]:
    return lambda v: "" if v[column] is None else str(v[column])


@dataclass(frozen=True)
class Column:
    header: str
    cap: int | None  # the widest it gets; None for the last column, which is never cut
    text: Callable[[dict[str, Any]], str]


COLUMNS = (
    Column("stored_at", 20, lambda v: _time(v["stored_at"])),
    Column("occurred_at", 20, lambda v: _time(v["occurred_at"])),
    Column("tenant", 16, _text("tenant")),
    Column("source", 12, _text("source")),
    Column("event_type", 26, _text("event_type")),
    Column("user", 30, _user),
    Column("product", 20, _product),
    Column("qty", 5, _text("quantity")),
    Column("price", 16, _price),
    Column("event_id", None, _text("event_id")),
)

_UNPRINTABLE = re.compile(
    r"[^\x20-\x7e\u00a0-\U0010ffff]|[\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _printable(text: str) -> str:
    """Control characters (and bidirectional overrides) as escapes: the text comes from clients."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Table:
    """Column widths fit the first rows (the page), at least the header and at most the column's cap;
    rows that come later (--follow) are cut to them, so the columns stay aligned."""

    def __init__(self, first: Sequence[StoredEvent]) -> None:
        self._widths: list[int | None] = []
        for column in COLUMNS:
            if column.cap is None:
                self._widths.append(None)
                continue
            cells = [len(_printable(column.text(event.values))) for event in first]
            widest = max(cells) if cells else column.cap
            self._widths.append(min(column.cap, max(len(column.header), widest)))

    def _line(self, cells: Sequence[str]) -> str:
        parts = [
            cell if width is None else _cut(cell, width).ljust(width)
            for cell, width in zip(cells, self._widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    def header(self) -> str:
        return self._line([column.header for column in COLUMNS])

    def row(self, event: StoredEvent) -> str:
        return self._line([_printable(column.text(event.values)) for column in COLUMNS])
