"""Pure tests of the sinks' row conversion (exact decimals, UTC, NUL) and of their error mapping."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from consumers.migrate import redact
from consumers.sinks import PostgresSink, SqliteSink, open_sink
from consumers.sinks import postgres as pg_sink
from consumers.sinks import sqlite as sqlite_sink
from consumers.sinks.schema import (
    POSTGRES_DDL,
    POSTGRES_INSERT,
    POSTGRES_STAGING_DDL,
    SQLITE_DDL,
    SQLITE_INSERT,
    decimal_text,
    json_text,
    json_without_nul,
    postgres_row,
    sqlite_row,
    sqlite_time,
)
from pipeline.canonical import COLUMNS, CanonicalEvent
from pipeline.errors import SinkUnavailable, UnstorableEvent

KST = timezone(timedelta(hours=9))
STORED = datetime(2024, 5, 1, 1, 2, 3, 456789, tzinfo=UTC)
SQLITE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def event(**fields: Any) -> CanonicalEvent:
    values: dict[str, Any] = {
        "tenant": "demo",
        "source": "topsort",
        "event_type": "purchase",
        "event_id": "ev-1",
        "occurred_at": datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=KST),
        "received_at": datetime(2024, 5, 1, 1, 0, 1, tzinfo=UTC),
        "raw": b'{"id": "ev-1", "unitPrice": 1321.43}',
    }
    values.update(fields)
    return CanonicalEvent(**values)


def full_event() -> CanonicalEvent:
    return event(
        user_id="u-1",
        anonymous_id="anon-1",
        product_id="p-1",
        product_ids=["p-1", "p-2"],
        category_id="c-1",
        vendor_id="v-1",
        order_id="o-1",
        quantity=3,
        price=Decimal("1321.43"),
        currency="KRW",
        search_query="신발",
        placement={"path": "/search", "position": 2},
        items=[{"productId": "p-1", "unitPrice": Decimal("0.10"), "quantity": 1}],
        attributes={"abx:item_count": 2, "c:coupon": "SPRING"},
    )


def by_column(row: tuple[Any, ...]) -> dict[str, Any]:
    assert len(row) == len(COLUMNS)
    return dict(zip(COLUMNS, row, strict=True))


def test_sqlite_row_holds_every_column_as_text_or_integer() -> None:
    row = by_column(sqlite_row(full_event(), sqlite_time(STORED)))
    assert row["tenant"] == "demo"
    assert row["occurred_at"] == "2024-05-01T01:00:00.123456+00:00"
    assert row["received_at"] == "2024-05-01T01:00:01.000000+00:00"
    assert row["stored_at"] == "2024-05-01T01:02:03.456789+00:00"
    assert row["product_ids"] == '["p-1","p-2"]'
    assert row["quantity"] == 3
    assert row["price"] == "1321.43"
    assert row["placement"] == '{"path":"/search","position":2}'
    assert row["items"] == '[{"productId":"p-1","unitPrice":0.10,"quantity":1}]'
    assert json.loads(row["attributes"]) == {"abx:item_count": 2, "c:coupon": "SPRING"}
    assert row["raw"] == '{"id": "ev-1", "unitPrice": 1321.43}'
    assert row["search_query"] == "신발"


def test_postgres_row_keeps_native_values() -> None:
    source = full_event()
    row = by_column(postgres_row(source, STORED))
    assert row["occurred_at"] == source.occurred_at  # asyncpg converts aware times to UTC itself
    assert row["stored_at"] is STORED
    assert row["product_ids"] == ["p-1", "p-2"]
    assert row["price"] == "1321.43"  # staged as exact text, cast to numeric by the INSERT
    assert row["items"] == '[{"productId":"p-1","unitPrice":0.10,"quantity":1}]'
    assert row["raw"] == source.raw.decode()


def test_optional_columns_are_null() -> None:
    for row in (sqlite_row(event(), "t"), postgres_row(event(), STORED)):
        values = by_column(row)
        assert [c for c, v in values.items() if v is None] == [
            "user_id",
            "anonymous_id",
            "product_id",
            "product_ids",
            "category_id",
            "vendor_id",
            "order_id",
            "quantity",
            "price",
            "currency",
            "search_query",
            "placement",
            "items",
            "attributes",
        ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(Decimal("1321.43"), "1321.43", id="cents"),
        pytest.param(Decimal("0.10"), "0.10", id="trailing-zero-kept"),
        pytest.param(Decimal("4000011.0"), "4000011.0", id="large-with-scale"),
        pytest.param(Decimal("2399"), "2399", id="integer"),
        pytest.param(Decimal("-0.5"), "-0.5", id="negative"),
        pytest.param(Decimal("1E+2"), "100", id="exponent-written-out"),
        pytest.param(Decimal("1.5E-7"), "0.00000015", id="small-exponent-written-out"),
        pytest.param(Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789", id="wide"),
        pytest.param(Decimal("1E+5000"), "1E+5000", id="huge-exponent-stays-short"),
        pytest.param(Decimal("NaN"), "NaN", id="nan"),
    ],
)
def test_decimal_text_is_exact(value: Decimal, text: str) -> None:
    assert decimal_text(value) == text
    assert Decimal(text) == value or value.is_nan()
    assert by_column(sqlite_row(event(price=value), "t"))["price"] == text


def test_json_keeps_decimals_as_exact_numbers() -> None:
    text = json_text({"price": Decimal("0.10"), "big": Decimal("4000011.0"), "n": 1})
    assert text == '{"price":0.10,"big":4000011.0,"n":1}'
    assert json.loads(text, parse_float=Decimal)["price"] == Decimal("0.10")


def test_json_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(UnstorableEvent, match="JSON"):
        sqlite_row(event(attributes={"x": object()}), "t")


@pytest.mark.parametrize(
    "occurred_at",
    [
        pytest.param(datetime(2024, 5, 1, 10, 0, tzinfo=KST), id="kst"),
        pytest.param(datetime(2024, 5, 1, 1, 0, tzinfo=UTC), id="utc"),
        pytest.param(
            datetime(2024, 4, 30, 19, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))), id="west"
        ),
    ],
)
def test_sqlite_time_is_one_utc_form(occurred_at: datetime) -> None:
    text = sqlite_time(occurred_at)
    assert text == "2024-05-01T01:00:00.000000+00:00"
    assert SQLITE_TIME.match(text)
    assert datetime.fromisoformat(text) == occurred_at


def test_sqlite_time_sorts_like_time() -> None:
    base = datetime(2024, 5, 1, tzinfo=UTC)
    times = [base + timedelta(microseconds=n * 7919) for n in range(200)]
    mixed = [t.astimezone(KST) if i % 2 else t for i, t in enumerate(times)]
    texts = [sqlite_time(t) for t in mixed]
    assert sorted(texts) == [sqlite_time(t) for t in sorted(times)]


@pytest.mark.parametrize("column", ["occurred_at", "received_at"])
def test_naive_time_is_unstorable(column: str) -> None:
    naive = event(**{column: datetime(2024, 5, 1, 1, 0)})  # noqa: DTZ001 - the point of the test
    with pytest.raises(UnstorableEvent, match="UTC offset"):
        sqlite_row(naive, "t")
    with pytest.raises(UnstorableEvent, match="UTC offset"):
        postgres_row(naive, STORED)


def test_time_beyond_utc_range_is_unstorable() -> None:
    with pytest.raises(UnstorableEvent, match="range"):
        sqlite_row(event(occurred_at=datetime(1, 1, 1, tzinfo=KST)), "t")


def test_raw_must_be_utf8() -> None:
    with pytest.raises(UnstorableEvent, match="UTF-8"):
        postgres_row(event(raw=b'{"a": "\xff"}'), STORED)


def test_postgres_row_replaces_nul_everywhere() -> None:
    hostile = event(
        event_id="ev\x00",
        user_id="u\x00",
        product_ids=["p\x00", "q"],
        search_query="\x00\x00",
        placement={"path\x00": "/x\x00"},
        items=["\x00"],
        attributes={"c:note": "a\x00b"},
        raw=b'{"id": "ev\\u0000", "note": "a\x00b"}',
    )
    row = by_column(postgres_row(hostile, STORED))
    assert row["event_id"] == "ev\ufffd"
    assert row["user_id"] == "u\ufffd"
    assert row["product_ids"] == ["p\ufffd", "q"]
    assert row["search_query"] == "\ufffd\ufffd"
    assert json.loads(row["placement"]) == {"path\ufffd": "/x\ufffd"}
    assert json.loads(row["items"]) == ["\ufffd"]
    assert json.loads(row["attributes"]) == {"c:note": "a\ufffdb"}
    # raw is `json`, which takes the escape as sent; only a literal NUL must go.
    assert row["raw"] == '{"id": "ev\\u0000", "note": "a\ufffdb"}'
    assert not any("\x00" in v for v in row.values() if isinstance(v, str))


def test_sqlite_row_keeps_nul() -> None:
    row = by_column(sqlite_row(event(user_id="u\x00", attributes={"k": "\x00"}), "t"))
    assert row["user_id"] == "u\x00"
    assert json.loads(row["attributes"]) == {"k": "\x00"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a":"x\\u0000y"}', '{"a":"x\\ufffdy"}', id="escape"),
        pytest.param('{"a\\u0000":1}', '{"a\\ufffd":1}', id="in-key"),
        pytest.param('["\\\\u0000"]', '["\\\\u0000"]', id="escaped-backslash-is-text"),
        pytest.param('["\\\\\\u0000"]', '["\\\\\\ufffd"]', id="escaped-backslash-then-escape"),
        pytest.param('{"a":"\\u00001"}', '{"a":"\\ufffd1"}', id="followed-by-digit"),
        pytest.param('{"a":"plain"}', '{"a":"plain"}', id="untouched"),
    ],
)
def test_json_without_nul(text: str, expected: str) -> None:
    assert json_without_nul(text) == expected
    assert "\x00" not in str(json.loads(expected))


def test_ddl_names_every_column_and_the_key() -> None:
    db = sqlite3.connect(":memory:")
    for statement in SQLITE_DDL:
        db.execute(statement)
    assert tuple(r[1] for r in db.execute("PRAGMA table_info(events)")) == COLUMNS
    assert [r[1] for r in db.execute("PRAGMA table_info(events)") if r[5]] == [
        "tenant",
        "source",
        "event_type",
        "event_id",
    ]
    assert [r[1] for r in db.execute("PRAGMA index_list(events)") if r[1] == "events_received_at_idx"]
    db.executemany(SQLITE_INSERT, [sqlite_row(full_event(), "t")] * 2)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    db.close()
    assert "PRIMARY KEY (tenant, source, event_type, event_id)" in POSTGRES_DDL[0]
    assert "price numeric" in POSTGRES_DDL[0] and "raw json NOT NULL" in POSTGRES_DDL[0]
    assert "PRIMARY KEY" not in POSTGRES_STAGING_DDL and "ON COMMIT DELETE ROWS" in POSTGRES_STAGING_DDL
    assert "price::numeric" in POSTGRES_INSERT and "ON CONFLICT DO NOTHING" in POSTGRES_INSERT


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        pytest.param("sqlite:///./.eventpipe/events.db", SqliteSink, "./.eventpipe/events.db", id="relative"),
        pytest.param(
            "sqlite:////var/lib/eventpipe/e.db", SqliteSink, "/var/lib/eventpipe/e.db", id="absolute"
        ),
        pytest.param("postgresql://u@h/db", PostgresSink, "postgresql://u@h/db", id="postgresql"),
        pytest.param("postgres://u@h/db", PostgresSink, "postgres://u@h/db", id="postgres"),
    ],
)
def test_open_sink_by_scheme(url: str, kind: type[SqliteSink | PostgresSink], target: str) -> None:
    sink = open_sink(url)
    assert type(sink) is kind
    assert isinstance(sink, SqliteSink | PostgresSink)
    assert (sink.path if isinstance(sink, SqliteSink) else sink.dsn) == target


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite://relative.db", "sqlite:///", "events.db"])
def test_open_sink_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sink URL"):
        open_sink(url)


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://app:s3cret@db:5432/events") == "postgresql://app:***@db:5432/events"
    assert redact("sqlite:///./e.db") == "sqlite:///./e.db"


async def test_naive_stored_at_is_a_caller_bug() -> None:
    for sink in (SqliteSink("unused.db"), PostgresSink("postgresql://unused")):
        with pytest.raises(ValueError, match="timezone-aware"):
            await sink.write([event()], datetime(2024, 5, 1))  # noqa: DTZ001 - the point of the test


def sqlite_error(code: int, name: str, message: str) -> sqlite3.Error:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(sqlite_error(13, "SQLITE_FULL", "database or disk is full"), SinkUnavailable, id="full"),
        pytest.param(sqlite_error(8, "SQLITE_READONLY", "readonly database"), SinkUnavailable, id="readonly"),
        pytest.param(sqlite_error(778, "SQLITE_IOERR_WRITE", "disk I/O error"), SinkUnavailable, id="ioerr"),
        pytest.param(sqlite_error(5, "SQLITE_BUSY", "database is locked"), SinkUnavailable, id="locked"),
        pytest.param(sqlite_error(14, "SQLITE_CANTOPEN", "unable to open"), SinkUnavailable, id="cantopen"),
        pytest.param(
            sqlite_error(18, "SQLITE_TOOBIG", "string or blob too big"), UnstorableEvent, id="toobig"
        ),
        pytest.param(
            sqlite_error(1299, "SQLITE_CONSTRAINT_NOTNULL", "NOT NULL"), UnstorableEvent, id="notnull"
        ),
    ],
)
def test_sqlite_error_mapping(error: sqlite3.Error, expected: type[Exception]) -> None:
    mapped = sqlite_sink.map_error(error, "x.db")
    assert type(mapped) is expected
    assert str(error) in str(mapped)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(ConnectionRefusedError(111, "refused"), SinkUnavailable, id="refused"),
        pytest.param(TimeoutError(), SinkUnavailable, id="timeout"),
        pytest.param(asyncpg.exceptions.AdminShutdownError("x"), SinkUnavailable, id="admin-shutdown"),
        pytest.param(asyncpg.exceptions.CannotConnectNowError("x"), SinkUnavailable, id="cannot-connect-now"),
        pytest.param(asyncpg.exceptions.TooManyConnectionsError("x"), SinkUnavailable, id="too-many"),
        pytest.param(asyncpg.exceptions.ConnectionDoesNotExistError("x"), SinkUnavailable, id="lost"),
        pytest.param(asyncpg.exceptions.DiskFullError("x"), SinkUnavailable, id="disk-full"),
        pytest.param(asyncpg.exceptions.SerializationError("x"), SinkUnavailable, id="serialization"),
        pytest.param(asyncpg.exceptions.InvalidTextRepresentationError("x"), UnstorableEvent, id="bad-text"),
        pytest.param(
            asyncpg.exceptions.UntranslatableCharacterError("x"), UnstorableEvent, id="nul-in-jsonb"
        ),
        pytest.param(asyncpg.exceptions.NotNullViolationError("x"), UnstorableEvent, id="not-null"),
        pytest.param(asyncpg.exceptions.ProgramLimitExceededError("x"), UnstorableEvent, id="key-too-long"),
        pytest.param(asyncpg.exceptions._base.DataError("x"), UnstorableEvent, id="client-encode"),
        pytest.param(OverflowError("value out of int64 range"), UnstorableEvent, id="int64"),
    ],
)
def test_postgres_error_mapping(error: BaseException, expected: type[Exception]) -> None:
    assert type(pg_sink.map_error(error)) is expected


def test_postgres_bugs_are_not_mapped() -> None:
    assert pg_sink.map_error(KeyError("x")) is None
