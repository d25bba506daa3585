"""Running `eventpipe events`: read the newest rows through the sink's reader and print them oldest
first, as `tail` does; with --follow, poll for rows stored since and print them as they come, until
Ctrl-C. A sink that cannot be read, or has no `events` table yet, is one line on stderr and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from consumers.events.follow import Follower
from consumers.events.render import Table, ndjson
from consumers.migrate import redact
from consumers.sinks.reader import (
    Dialect,
    EventFilter,
    Query,
    Reader,
    StoredEvent,
    decode,
    newest,
    open_reader,
    since,
)
from consumers.sinks.schema import TABLE
from pipeline.errors import SinkUnavailable


@dataclass(frozen=True)
class Options:
    where: EventFilter = field(default_factory=EventFilter)
    limit: int = 20
    follow: bool = False
    json: bool = False
    interval: float = 1.0  # seconds between polls under --follow
    timeout: float = 10.0  # for each read


class Unreadable(Exception):
    """The sink cannot be read; the message says why, for the operator."""


class Printer:
    def __init__(self, out: TextIO, as_json: bool, page: Sequence[StoredEvent]) -> None:
        self._out = out
        self._table = None if as_json else Table(page)

    def header(self) -> None:
        if self._table is not None:
            self._out.write(self._table.header() + "\n")

    def rows(self, events: Sequence[StoredEvent]) -> None:
        for event in events:
            self._out.write((ndjson(event) if self._table is None else self._table.row(event)) + "\n")
        self._out.flush()


class Session:
    """One sink, read with one dialect, each read bounded by the timeout."""

    def __init__(self, url: str, reader: Reader, dialect: Dialect, timeout: float) -> None:
        self._where = redact(url)
        self.reader = reader
        self.dialect = dialect
        self._timeout = timeout

    async def _read(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            async with asyncio.timeout(self._timeout):
                return await self.reader.fetch(sql, params)
        except SinkUnavailable as exc:
            raise Unreadable(f"cannot read events from {self._where}: {exc}") from exc
        except TimeoutError as exc:
            raise Unreadable(f"{self._where} did not answer within {self._timeout:g} s") from exc

    async def check_table(self) -> None:
        (row,) = await self._read(self.dialect.table_exists, (TABLE,))
        if not row[0]:
            raise Unreadable(
                f"{self._where} has no events table yet: `eventpipe migrate` creates it, as does the "
                "first consumer"
            )

    async def events(self, query: Query) -> list[StoredEvent]:
        return [decode(self.dialect, row) for row in await self._read(query.sql, query.params)]


async def show(url: str, options: Options, out: TextIO, stop: asyncio.Event) -> int:
    reader, dialect = open_reader(url)
    session = Session(url, reader, dialect, options.timeout)
    try:
        return await _show(session, options, out, stop)
    except Unreadable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await reader.close()


async def _show(session: Session, options: Options, out: TextIO, stop: asyncio.Event) -> int:
    await session.check_table()
    where = options.where
    page = await session.events(newest(session.dialect, where, options.limit))
    page.reverse()  # read newest first, shown oldest first
    printer = Printer(out, options.json, page)
    if page or options.follow:
        printer.header()
    printer.rows(page)
    if not options.follow:
        if not page:
            print(f"no events{_described(where)}", file=sys.stderr)
        return 0
    follower = Follower(session.dialect)
    follower.take(page)
    if follower.newest is not None:
        # Rows just behind the page that the next poll reads again (PostgreSQL's lookback) were there
        # before: taken as seen. Only rows after the page's newest are new.
        shown = follower.newest
        around = await session.events(since(session.dialect, where, follower.since()))
        printer.rows([row for row in follower.take(around) if row.position > shown])
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.interval)
        if stop.is_set():
            break
        printer.rows(follower.take(await session.events(since(session.dialect, where, follower.since()))))
    return 0


def _described(where: EventFilter) -> str:
    given = " ".join(f"{column}={value}" for column, value in where.clauses())
    return f" match {given}" if given else " yet"


def main(url: str, options: Options) -> int:
    async def run() -> int:
        stop = asyncio.Event()
        if options.follow:
            # Ctrl-C is how --follow ends: between polls, the reader closed, exit 0.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        return await show(url, options, sys.stdout, stop)

    try:
        return asyncio.run(run())
    except BrokenPipeError:
        # The reader of our output left (`| head`): not an error. Python would complain flushing
        # stdout at exit, so it goes to /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
