"""The `events` table of both sinks (DDL) and the pure conversion of a CanonicalEvent into a row tuple."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from pipeline.canonical import COLUMNS, CanonicalEvent
from pipeline.errors import UnstorableEvent

TABLE = "events"

# Column types in COLUMNS order. SQLite keeps exact values as TEXT (a REAL price would lose cents).
_SQLITE_TYPES = {
    "tenant": "TEXT NOT NULL",
    "source": "TEXT NOT NULL",
    "event_type": "TEXT NOT NULL",
    "event_id": "TEXT NOT NULL",
    "occurred_at": "TEXT NOT NULL",
    "received_at": "TEXT NOT NULL",
    "stored_at": "TEXT NOT NULL",
    "user_id": "TEXT",
    "anonymous_id": "TEXT",
    "product_id": "TEXT",
    "product_ids": "TEXT",
    "category_id": "TEXT",
    "vendor_id": "TEXT",
    "order_id": "TEXT",
    "quantity": "INTEGER",
    "price": "TEXT",
    "currency": "TEXT",
    "search_query": "TEXT",
    "placement": "TEXT",
    "items": "TEXT",
    "attributes": "TEXT",
    "raw": "TEXT NOT NULL",
}

_POSTGRES_TYPES = {
    "tenant": "text NOT NULL",
    "source": "text NOT NULL",
    "event_type": "text NOT NULL",
    "event_id": "text NOT NULL",
    "occurred_at": "timestamptz NOT NULL",
    "received_at": "timestamptz NOT NULL",
    "stored_at": "timestamptz NOT NULL",
    "user_id": "text",
    "anonymous_id": "text",
    "product_id": "text",
    "product_ids": "text[]",
    "category_id": "text",
    "vendor_id": "text",
    "order_id": "text",
    "quantity": "bigint",
    "price": "numeric",
    "currency": "text",
    "search_query": "text",
    "placement": "jsonb",
    "items": "jsonb",
    "attributes": "jsonb",
    # json, not jsonb: json keeps the text exactly as sent (key order, spacing, escapes).
    "raw": "json NOT NULL",
}

assert tuple(_SQLITE_TYPES) == COLUMNS
assert tuple(_POSTGRES_TYPES) == COLUMNS

_KEY = "PRIMARY KEY (tenant, source, event_type, event_id)"


def _table_ddl(types: dict[str, str], name: str = TABLE, key: bool = True) -> str:
    columns = [f"    {column} {kind}" for column, kind in types.items()]
    if key:
        columns.append(f"    {_KEY}")
    return f"CREATE TABLE IF NOT EXISTS {name} (\n" + ",\n".join(columns) + "\n)"


SQLITE_DDL = (
    _table_ddl(_SQLITE_TYPES),
    f"CREATE INDEX IF NOT EXISTS {TABLE}_received_at_idx ON {TABLE} (received_at)",
)

POSTGRES_DDL = (
    _table_ddl(_POSTGRES_TYPES),
    f"CREATE INDEX IF NOT EXISTS {TABLE}_received_at_idx ON {TABLE} (received_at)",
)

# The per-connection staging table of the PostgreSQL sink: no key or index so COPY into it is cheap;
# ON COMMIT DELETE ROWS empties it by truncation, without the catalog churn of a table per batch.
# price travels as its exact decimal text, cast by the INSERT: asyncpg's binary numeric encoder took a
# quarter of the COPY's client CPU; PostgreSQL's numeric input is exact and keeps the scale ("0.10").
POSTGRES_STAGING = "eventpipe_batch"
POSTGRES_STAGING_DDL = (
    _table_ddl({**_POSTGRES_TYPES, "price": "text"}, POSTGRES_STAGING, key=False).replace(
        "CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS", 1
    )
    + " ON COMMIT DELETE ROWS"
)

# Every statement below is built from the constants above, never from data.
_column_list = ", ".join(COLUMNS)
SQLITE_INSERT = (
    f"INSERT INTO {TABLE} ({_column_list}) VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING"  # noqa: S608
)
_staged_list = ", ".join("price::numeric" if column == "price" else column for column in COLUMNS)
# Counting in SQL returns one row per source instead of one per inserted event.
POSTGRES_INSERT = (
    f"WITH inserted AS (INSERT INTO {TABLE} ({_column_list}) SELECT {_staged_list} FROM {POSTGRES_STAGING} "  # noqa: S608
    "ON CONFLICT DO NOTHING RETURNING source) SELECT source, count(*) FROM inserted GROUP BY source"
)
COUNT = "SELECT count(*) FROM events"

SqliteRow = tuple[Any, ...]
PostgresRow = tuple[Any, ...]

_json = msgspec.json.Encoder(decimal_format="number")
_REPLACEMENT = "\ufffd"
# A JSON `\u0000` escape, but not a literal backslash followed by "u0000" (an escaped backslash).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def sqlite_time(value: datetime) -> str:
    """One fixed, sortable form: `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`."""
    if value.tzinfo is UTC:  # the decoders' times: two of them per row, so skip the conversion
        return value.isoformat(timespec="microseconds")
    try:
        return _aware(value).astimezone(UTC).isoformat(timespec="microseconds")
    except OverflowError as exc:
        raise UnstorableEvent(f"time out of range in UTC: {value.isoformat()}") from exc


def decimal_text(value: Decimal) -> str:
    """The exact decimal, in plain notation where that stays short (as PostgreSQL prints numeric)."""
    text = str(value)
    if "E" in text:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and abs(exponent) <= 1000:
            return format(value, "f")
    return text


def json_text(value: Any) -> str:
    """JSON with Decimals as exact numbers."""
    try:
        return _json.encode(value).decode()
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise UnstorableEvent(f"cannot encode as JSON: {exc}") from exc


def without_nul(text: str) -> str:
    """PostgreSQL text cannot hold U+0000."""
    return text.replace("\x00", _REPLACEMENT) if "\x00" in text else text


def json_without_nul(text: str) -> str:
    """jsonb cannot hold the escape `\\u0000` either; an escaped backslash before `u0000` is kept."""
    if "\\u0000" not in text:
        return text
    data = _NUL_ESCAPE.sub(rb"\1\\ufffd", text.encode())
    return without_nul(data.decode())


def sqlite_row(event: CanonicalEvent, stored_at: str) -> SqliteRow:
    """The row of `events` in SQLite; `stored_at` is `sqlite_time()` of the batch's time."""
    return (
        event.tenant,
        event.source,
        event.event_type,
        event.event_id,
        sqlite_time(event.occurred_at),
        sqlite_time(event.received_at),
        stored_at,
        event.user_id,
        event.anonymous_id,
        event.product_id,
        None if event.product_ids is None else json_text(event.product_ids),
        event.category_id,
        event.vendor_id,
        event.order_id,
        event.quantity,
        None if event.price is None else decimal_text(event.price),
        event.currency,
        event.search_query,
        None if event.placement is None else json_text(event.placement),
        None if event.items is None else json_text(event.items),
        None if event.attributes is None else json_text(event.attributes),
        _raw_text(event.raw),
    )


def postgres_row(event: CanonicalEvent, stored_at: datetime) -> PostgresRow:
    """The row of `events` in PostgreSQL, U+0000 replaced by U+FFFD in every string."""
    t = without_nul
    return (
        t(event.tenant),
        t(event.source),
        t(event.event_type),
        t(event.event_id),
        _aware(event.occurred_at),
        _aware(event.received_at),
        stored_at,
        None if event.user_id is None else t(event.user_id),
        None if event.anonymous_id is None else t(event.anonymous_id),
        None if event.product_id is None else t(event.product_id),
        None if event.product_ids is None else [t(p) for p in event.product_ids],
        None if event.category_id is None else t(event.category_id),
        None if event.vendor_id is None else t(event.vendor_id),
        None if event.order_id is None else t(event.order_id),
        event.quantity,
        None if event.price is None else decimal_text(event.price),
        None if event.currency is None else t(event.currency),
        None if event.search_query is None else t(event.search_query),
        None if event.placement is None else json_without_nul(json_text(event.placement)),
        None if event.items is None else json_without_nul(json_text(event.items)),
        None if event.attributes is None else json_without_nul(json_text(event.attributes)),
        # `json` accepts the escape `\u0000` (only jsonb refuses it), so raw stays as sent.
        without_nul(_raw_text(event.raw)),
    )


def _aware(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    # A naive time would be read as the consumer's local time by one database and as UTC by the other.
    if value.tzinfo is None or value.utcoffset() is None:
        raise UnstorableEvent(f"time without a UTC offset: {value.isoformat()}")
    return value


def _raw_text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise UnstorableEvent(f"raw event is not UTF-8: {exc}") from exc
