"""Reading `events` back, read-only, for `eventpipe events`: the same filters in both dialects as
parameterized SQL, and rows decoded to the same Python values whichever sink stored them.

Rows are ordered by their position in the table. In SQLite that is the rowid: writers take turns
(BEGIN IMMEDIATE), so rowids grow in commit order and a reader that has seen rowid n has seen every
row before it. PostgreSQL has no such column; there the position is stored_at, which a consumer
stamps just before its batch's transaction, so a batch can become visible after a later-stamped one.
Whoever follows the table reads PostgreSQL again over LOOKBACK behind the newest row seen.
Positions are integers in both: the rowid, or stored_at in microseconds since the epoch (exact, as
PostgreSQL keeps microseconds)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from consumers.sinks.postgres import URL_SCHEMES as POSTGRES_SCHEMES
from consumers.sinks.postgres import PostgresSink
from consumers.sinks.schema import TABLE
from consumers.sinks.sqlite import URL_PREFIX as SQLITE_PREFIX
from consumers.sinks.sqlite import SqliteSink
from pipeline.canonical import COLUMNS

# Far more than a batch's transaction takes (milliseconds to a second): a row made visible later
# than this after its batch was stamped is in the table but not shown by --follow.
LOOKBACK = timedelta(seconds=10)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Key = tuple[str, str, str, str]  # the table's primary key: tenant, source, event type, event id
JSON_COLUMNS = frozenset({"placement", "items", "attributes", "raw"})
TIME_COLUMNS = frozenset({"occurred_at", "received_at", "stored_at"})


@dataclass(frozen=True)
class EventFilter:
    tenant: str | None = None
    source: str | None = None
    event_type: str | None = None

    def clauses(self) -> list[tuple[str, str]]:
        """(column, value) of each filter given."""
        given = (("tenant", self.tenant), ("source", self.source), ("event_type", self.event_type))
        return [(column, value) for column, value in given if value is not None]


def _micros(value: datetime) -> int:
    return (value - EPOCH) // MICROSECOND


@dataclass(frozen=True)
class Dialect:
    name: str
    position: str  # the expression rows are ordered and followed by
    tie_break: tuple[str, ...]  # columns after it, so that the order is total
    placeholder: Callable[[int], str]  # the n-th parameter (1-based)
    table_exists: str  # one row, one column: truthy when `events` exists; parameter 1 is the name
    lookback: int  # in positions: how far behind the newest row seen a follower reads again
    position_of: Callable[[Any], int]  # the position of a row, from the value the database returns
    parameter: Callable[[int], object]  # a position as the database compares it

    def back(self, position: int) -> int:
        """Where a follower reads from again, given the newest position it has seen."""
        return position - self.lookback


SQLITE = Dialect(
    name="sqlite",
    position="rowid",
    tie_break=(),
    placeholder=lambda n: "?",
    table_exists="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
    lookback=0,
    position_of=int,
    parameter=lambda position: position,
)
POSTGRES = Dialect(
    name="postgresql",
    position="stored_at",
    tie_break=("tenant", "source", "event_type", "event_id"),
    placeholder=lambda n: f"${n}",
    table_exists="SELECT to_regclass($1) IS NOT NULL",
    lookback=LOOKBACK // MICROSECOND,
    position_of=_micros,
    parameter=lambda position: EPOCH + position * MICROSECOND,
)


@dataclass(frozen=True)
class Query:
    sql: str
    params: tuple[object, ...]


def _select(dialect: Dialect, conditions: list[str], descending: bool) -> str:
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    direction = " DESC" if descending else ""
    order = ", ".join(f"{column}{direction}" for column in (dialect.position, *dialect.tie_break))
    # Only column names from COLUMNS and the dialect's constants are spliced in; values are parameters.
    return f"SELECT {dialect.position}, {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY {order}"  # noqa: S608


def _filtered(dialect: Dialect, where: EventFilter) -> tuple[list[str], list[object]]:
    conditions: list[str] = []
    params: list[object] = []
    for column, value in where.clauses():
        params.append(value)
        conditions.append(f"{column} = {dialect.placeholder(len(params))}")
    return conditions, params


def newest(dialect: Dialect, where: EventFilter, limit: int) -> Query:
    """The `limit` newest matching rows, newest first."""
    conditions, params = _filtered(dialect, where)
    params.append(limit)
    return Query(
        f"{_select(dialect, conditions, True)} LIMIT {dialect.placeholder(len(params))}", tuple(params)
    )


def since(dialect: Dialect, where: EventFilter, position: int | None) -> Query:
    """Every matching row at or after `position` (all of them for None), oldest first."""
    conditions, params = _filtered(dialect, where)
    if position is not None:
        params.append(dialect.parameter(position))
        conditions.append(f"{dialect.position} >= {dialect.placeholder(len(params))}")
    return Query(_select(dialect, conditions, False), tuple(params))


@dataclass(frozen=True)
class StoredEvent:
    position: int
    values: dict[str, Any]  # by column, in COLUMNS order: times UTC datetimes, price Decimal,
    # product_ids a list, JSON columns msgspec.Raw (their text exactly as stored)

    @property
    def key(self) -> Key:
        v = self.values
        return (v["tenant"], v["source"], v["event_type"], v["event_id"])


def decode(dialect: Dialect, row: Sequence[Any]) -> StoredEvent:
    """A row of newest() or since()."""
    values = dict(zip(COLUMNS, row[1:], strict=True))
    for column in TIME_COLUMNS:
        values[column] = _time(values[column])
    for column in JSON_COLUMNS:
        text = values[column]
        if text is not None:
            values[column] = msgspec.Raw(text.encode() if isinstance(text, str) else text)
    if isinstance(values["price"], str):  # SQLite keeps the exact decimal as text
        values["price"] = Decimal(values["price"])
    if isinstance(values["product_ids"], str):  # SQLite: a JSON array; PostgreSQL: text[]
        values["product_ids"] = json.loads(values["product_ids"])
    return StoredEvent(dialect.position_of(row[0]), values)


def _time(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.astimezone(UTC)


class Reader(Protocol):
    async def fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement; SinkUnavailable when the database cannot be read."""
        ...

    async def close(self) -> None: ...


def open_reader(url: str) -> tuple[Reader, Dialect]:
    """A reader of the sink that creates nothing (no file, no table), and its dialect."""
    if url.startswith(SQLITE_PREFIX):
        return SqliteSink(url.removeprefix(SQLITE_PREFIX), create=False), SQLITE
    if url.startswith(POSTGRES_SCHEMES):
        # One connection is all a reader needs.
        return PostgresSink(url, create=False, min_size=1, max_size=1), POSTGRES
    raise ValueError(f"unsupported sink URL {url!r}: use sqlite:///path.db or postgresql://…")
