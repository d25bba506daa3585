"""`eventpipe events`, the pure parts: the SQL of both dialects (the same filters, values only as
parameters), rows of either sink decoded to the same values, which rows a follower has not shown
yet, and the table and JSON lines printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from consumers.events.follow import Follower
from consumers.events.render import Table, ndjson, shown_id
from consumers.sinks.reader import POSTGRES, SQLITE, Dialect, EventFilter, StoredEvent, decode, newest, since
from pipeline.canonical import COLUMNS

SELECT = "SELECT {position}, " + ", ".join(COLUMNS) + " FROM events"  # noqa: S608 - the expected text
PG_ORDER = "stored_at{d}, tenant{d}, source{d}, event_type{d}, event_id{d}"
AT = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dialect", "where", "sql", "params"),
    [
        pytest.param(SQLITE, EventFilter(), " ORDER BY rowid DESC LIMIT ?", (5,), id="sqlite-all"),
        pytest.param(
            SQLITE,
            EventFilter(tenant="shop-a", source="dfinery", event_type="purchase"),
            " WHERE tenant = ? AND source = ? AND event_type = ? ORDER BY rowid DESC LIMIT ?",
            ("shop-a", "dfinery", "purchase", 5),
            id="sqlite-every-filter",
        ),
        pytest.param(
            POSTGRES,
            EventFilter(event_type="x' OR 1=1 --"),
            f" WHERE event_type = $1 ORDER BY {PG_ORDER.format(d=' DESC')} LIMIT $2",
            ("x' OR 1=1 --", 5),
            id="postgres-a-value-is-only-a-parameter",
        ),
        pytest.param(
            POSTGRES,
            EventFilter(source="topsort"),
            f" WHERE source = $1 ORDER BY {PG_ORDER.format(d=' DESC')} LIMIT $2",
            ("topsort", 5),
            id="postgres-one-filter",
        ),
    ],
)
def test_newest_rows_query(
    dialect: Dialect, where: EventFilter, sql: str, params: tuple[object, ...]
) -> None:
    query = newest(dialect, where, 5)
    assert query.sql == SELECT.format(position=dialect.position) + sql
    assert query.params == params


def test_rows_since_a_position_in_both_dialects() -> None:
    where = EventFilter(tenant="shop-a")
    lite = since(SQLITE, where, 41)
    assert lite.sql == SELECT.format(position="rowid") + " WHERE tenant = ? AND rowid >= ? ORDER BY rowid"
    assert lite.params == ("shop-a", 41)
    micros = (AT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    pg = since(POSTGRES, where, micros)
    assert pg.sql == (
        SELECT.format(position="stored_at")
        + f" WHERE tenant = $1 AND stored_at >= $2 ORDER BY {PG_ORDER.format(d='')}"
    )
    assert pg.params == ("shop-a", AT)  # microseconds back to the exact time
    assert since(SQLITE, EventFilter(), None).sql == SELECT.format(position="rowid") + " ORDER BY rowid"


def values(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(COLUMNS)
    base.update(
        tenant="shop-a",
        source="topsort",
        event_type="purchase",
        event_id="ev-1",
        occurred_at=AT - timedelta(minutes=2),
        received_at=AT - timedelta(seconds=1),
        stored_at=AT,
        raw='{"id": "ev-1", "n": 1.10}',
    )
    base.update(changes)
    return base


def test_rows_of_either_sink_decode_to_the_same_values() -> None:
    # asyncpg hands back aware datetimes; one in another zone is the same instant.
    kst = AT.astimezone(timezone(timedelta(hours=9)))
    sqlite_row = values(
        occurred_at="2026-11-23T09:58:00.123456+00:00",
        received_at="2026-11-23T09:59:59.123456+00:00",
        stored_at="2026-11-23T10:00:00.123456+00:00",
        product_ids='["p-1", "p-2"]',
        price="12.10",
        items='[{"productId": "p-1", "unitPrice": 1.10}]',
    )
    postgres_row = values(
        stored_at=kst,
        product_ids=["p-1", "p-2"],
        price=Decimal("12.10"),
        items='[{"productId": "p-1", "unitPrice": 1.10}]',
    )
    lite = decode(SQLITE, [7, *sqlite_row.values()])
    pg = decode(POSTGRES, [postgres_row["stored_at"], *postgres_row.values()])
    assert lite.values == pg.values
    assert lite.values["price"] == Decimal("12.10") and str(lite.values["price"]) == "12.10"
    assert lite.values["stored_at"] == AT and lite.values["stored_at"].tzinfo is UTC
    assert lite.values["raw"] == msgspec.Raw(b'{"id": "ev-1", "n": 1.10}')
    assert lite.key == pg.key == ("shop-a", "topsort", "purchase", "ev-1")
    assert lite.position == 7
    assert pg.position == (AT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def event(position: int, event_id: str, **changes: Any) -> StoredEvent:
    return StoredEvent(position, values(event_id=event_id, **{"raw": msgspec.Raw(b"{}"), **changes}))


def ids(events: list[StoredEvent]) -> list[str]:
    return [e.values["event_id"] for e in events]


def test_a_sqlite_follower_reads_on_from_the_last_rowid() -> None:
    follower = Follower(SQLITE)
    assert follower.since() is None
    assert ids(follower.take([event(1, "a"), event(2, "b")])) == ["a", "b"]
    assert follower.since() == 2  # the last row is read again, and skipped
    assert ids(follower.take([event(2, "b"), event(3, "c")])) == ["c"]


def test_a_postgres_follower_shows_a_batch_committed_after_a_later_stamped_one() -> None:
    second = 1_000_000
    follower = Follower(POSTGRES)
    follower.take([event(100 * second, "a")])
    assert follower.since() == 90 * second  # ten seconds of lookback
    # A batch stamped at 95 s becomes visible after one stamped at 100.5 s: shown, once.
    polled = [event(95 * second, "late"), event(100 * second, "a"), event(int(100.5 * second), "b")]
    assert ids(follower.take(polled)) == ["late", "b"]
    assert follower.take(polled) == []
    # Keys behind the lookback are forgotten: they are never read again.
    follower.take([event(200 * second, "c")])
    assert follower.since() == 190 * second
    assert follower.take([event(200 * second, "c")]) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("u-46e60ae48e", "u-46e60ae48e", id="pseudonymous-id"),
        pytest.param("1234567890", "1234567890", id="numeric-id"),
        pytest.param("jane.doe@example.com", "<email>", id="email"),
        pytest.param("+82 10-1234-5678", "<phone>", id="phone"),
    ],
)
def test_user_ids_that_are_contact_details_are_masked(value: str, shown: str) -> None:
    assert shown_id(value) == shown


def row_texts(table: Table, *events: StoredEvent) -> list[str]:
    return [table.header(), *(table.row(e) for e in events)]


def test_the_table_shows_who_did_what_and_leaves_personal_data_out() -> None:
    purchase = event(
        1,
        "ev-1",
        user_id="jane.doe@example.com",
        product_ids=["p-1", "p-2", "p-3"],
        quantity=6,
        price=Decimal("676.91"),
        currency="KRW",
        search_query="jane's pregnancy test",
        attributes=msgspec.Raw(b'{"email": "jane.doe@example.com"}'),
        raw=msgspec.Raw(b'{"email": "jane.doe@example.com"}'),
    )
    view = event(
        2, "ev-2", source="retailrocket", event_type="product_view", anonymous_id="s-1", product_id="42"
    )
    lines = row_texts(Table([purchase, view]), purchase, view)
    assert lines == [
        "stored_at             occurred_at           tenant  source        event_type    user      product  qty  price       event_id",
        "2026-11-23T10:00:00Z  2026-11-23T09:58:00Z  shop-a  topsort       purchase      <email>   p-1 +2   6    676.91 KRW  ev-1",
        "2026-11-23T10:00:00Z  2026-11-23T09:58:00Z  shop-a  retailrocket  product_view  anon s-1  42                        ev-2",
    ]
    assert "jane" not in "\n".join(lines) and "pregnancy" not in "\n".join(lines)


def test_rows_after_the_page_are_cut_to_its_widths_and_control_characters_escaped() -> None:
    table = Table([event(1, "ev-1", anonymous_id="s-1")])
    long = event(2, "\x1b]0;owned\x07ev-2", anonymous_id="s-" + "x" * 40, tenant="t" * 30)
    line = table.row(long)
    assert "\x1b" not in line and "\x07" not in line
    assert line.endswith("\\x1b]0;owned\\x07ev-2")  # the last column is never cut
    # Cut to the widths of the page (tenant: 6, as "shop-a" and the header), so columns stay aligned.
    assert "  ttttt…  topsort  " in line
    assert table.header().index("source") == line.index("topsort")
    # Without a page (--follow on an empty table) every column takes its full width.
    assert (
        Table([]).header().startswith("stored_at             occurred_at           tenant            source")
    )


def test_json_lines_hold_every_column_with_exact_numbers_and_raw_as_stored() -> None:
    stored = decode(
        SQLITE,
        [
            3,
            *values(
                occurred_at="2026-11-23T09:58:00.000000+00:00",
                received_at="2026-11-23T09:59:59.000000+00:00",
                stored_at="2026-11-23T10:00:00.123456+00:00",
                price="0.10",
                product_ids='["p-1"]',
                attributes='{"c:size": 270.0000000000000001}',
            ).values(),
        ],
    )
    line = ndjson(stored)
    assert "\n" not in line
    document = json.loads(line, parse_float=Decimal)
    assert list(document) == list(COLUMNS)
    assert document["price"] == Decimal("0.10")
    assert '"price":0.10,' in line
    assert document["stored_at"] == "2026-11-23T10:00:00.123456Z"
    assert document["product_ids"] == ["p-1"]
    assert document["attributes"] == {"c:size": Decimal("270.0000000000000001")}
    assert '"raw":{"id": "ev-1", "n": 1.10}' in line  # the vendor's JSON exactly as received
