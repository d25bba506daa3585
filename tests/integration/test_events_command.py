"""`eventpipe events` as an operator runs it, against a real SQLite file and the real PostgreSQL server:
the newest rows oldest first, the filters, every column as JSON lines (the same from both sinks),
--follow printing rows stored after it started (a batch that commits after a later-stamped one
included) and ending cleanly on Ctrl-C, and one clear line when the sink cannot be read."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from consumers.sinks import open_sink
from pipeline.canonical import COLUMNS, CanonicalEvent
from tests.cli_process import eventpipe
from tests.integration.test_sinks import make_event
from tests.waiting import wait_for

STORED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


async def store(url: str, events: list[CanonicalEvent], stored_at: datetime) -> None:
    sink = open_sink(url)
    try:
        await sink.write(events, stored_at)
    finally:
        await sink.close()


def event_ids(table: str) -> list[str]:
    """The last column of each row of the table, under its header."""
    lines = table.splitlines()
    assert lines[0].split()[0] == "stored_at", table
    return [line.split()[-1] for line in lines[1:]]


async def fill(url: str) -> None:
    await store(url, [make_event(n, tenant="shop-a") for n in range(1, 4)], STORED)
    purchases = [
        make_event(
            10 + n,
            source="dfinery",
            event_type="purchase",
            tenant="shop-b",
            user_id="jane.doe@example.com",
            price=Decimal("12.10"),
            currency="KRW",
            attributes={"email": "jane.doe@example.com", "c:weight": Decimal("0.1000000000000000001")},
        )
        for n in range(2)
    ]
    await store(url, purchases, STORED + timedelta(seconds=1))
    await store(url, [make_event(4, tenant="shop-a")], STORED + timedelta(seconds=2))


async def test_the_newest_rows_oldest_first_and_the_filters(sink_url: str) -> None:
    await fill(sink_url)
    env = {"EVENTPIPE_SINK": sink_url}
    out = await eventpipe("events", env=env)
    assert out.returncode == 0, out.stderr
    assert event_ids(out.stdout) == ["ev-1", "ev-2", "ev-3", "ev-10", "ev-11", "ev-4"]
    header = out.stdout.splitlines()[0].split()
    assert header == [
        *("stored_at", "occurred_at", "tenant", "source", "event_type"),
        *("user", "product", "qty", "price", "event_id"),
    ]
    # The purchases' row: masked email, exact price with its currency; no attributes in the table.
    purchase = next(line for line in out.stdout.splitlines() if line.endswith(" ev-10"))
    assert purchase.split() == [
        *("2026-11-23T10:00:01Z", "2024-05-01T01:00:00Z", "shop-b", "dfinery", "purchase"),
        *("<email>", "p-10", "12.10", "KRW", "ev-10"),
    ]
    assert "jane" not in out.stdout

    async def ids(*args: str) -> list[str]:
        found = await eventpipe("events", *args, env=env)
        assert found.returncode == 0, found.stderr
        return event_ids(found.stdout)

    assert await ids("--limit", "2") == ["ev-11", "ev-4"]
    assert await ids("--source", "dfinery") == ["ev-10", "ev-11"]
    assert await ids("--tenant", "shop-a", "-n", "3") == ["ev-2", "ev-3", "ev-4"]
    assert await ids("--type", "purchase", "--tenant", "shop-b", "--source", "dfinery") == ["ev-10", "ev-11"]
    none = await eventpipe("events", "--type", "x' OR '1'='1", env=env)
    assert (none.returncode, none.stdout, none.stderr) == (0, "", "no events match event_type=x' OR '1'='1\n")


async def test_json_lines_hold_every_column_as_stored(sink_url: str) -> None:
    await fill(sink_url)
    out = await eventpipe(
        "events", "--json", "--source", "dfinery", "--limit", "1", env={"EVENTPIPE_SINK": sink_url}
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    document = json.loads(line, parse_float=Decimal)
    assert document == {
        **dict.fromkeys(COLUMNS),
        "tenant": "shop-b",
        "source": "dfinery",
        "event_type": "purchase",
        "event_id": "ev-11",
        "occurred_at": "2024-05-01T01:00:00.000011Z",
        "received_at": "2024-05-01T01:00:05Z",
        "stored_at": "2026-11-23T10:00:01Z",
        "user_id": "jane.doe@example.com",
        "product_id": "p-11",
        "price": Decimal("12.10"),
        "currency": "KRW",
        "attributes": {"email": "jane.doe@example.com", "c:weight": Decimal("0.1000000000000000001")},
        "raw": {"id": "ev-11", "entity": {"type": "product", "id": "p-11"}},
    }
    assert list(document) == list(COLUMNS)


@asynccontextmanager
async def following(url: str, *args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """`eventpipe events --follow` running, its stdout lines collected as they come."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "eventpipe", "events", "--follow", "--interval", "0.1", *args),
        env={**os.environ, "EVENTPIPE_SINK": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line.decode().rstrip("\n"))

    reading = asyncio.create_task(collect())
    try:
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reading


async def wait_for_line(lines: list[str], ending: str, proc: asyncio.subprocess.Process) -> None:
    def shown() -> bool:
        assert proc.returncode is None, lines
        return any(line.endswith(ending) for line in lines)

    await wait_for(shown, 30, lambda: f"a row ending {ending!r}; have {lines}")


async def test_follow_prints_rows_stored_after_it_started_and_ends_on_ctrl_c(sink_url: str) -> None:
    await fill(sink_url)
    async with following(sink_url, "--tenant", "shop-a", "--limit", "2") as (proc, lines):
        await wait_for_line(lines, " ev-4", proc)
        assert event_ids("\n".join(lines)) == ["ev-3", "ev-4"]

        await store(sink_url, [make_event(5, tenant="shop-a")], STORED + timedelta(seconds=3))
        await store(sink_url, [make_event(6, tenant="shop-b")], STORED + timedelta(seconds=3))  # filtered out
        await wait_for_line(lines, " ev-5", proc)
        # A batch stamped before the newest row but committed after it (two consumers, the slower
        # transaction last): still shown, once.
        await store(
            sink_url, [make_event(7, tenant="shop-a")], STORED + timedelta(seconds=2, milliseconds=500)
        )
        await store(sink_url, [make_event(8, tenant="shop-a")], STORED + timedelta(seconds=4))
        await wait_for_line(lines, " ev-8", proc)

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            code = await proc.wait()
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
    assert (code, stderr) == (0, "")
    shown = event_ids("\n".join(lines))
    assert shown[:2] == ["ev-3", "ev-4"]
    assert sorted(shown[2:]) == ["ev-5", "ev-7", "ev-8"]  # each once, shop-b's not at all


async def test_a_sink_without_the_table_is_one_clear_line(sink_url: str, tmp_path: Path) -> None:
    if sink_url.startswith("sqlite:///"):
        absent = await eventpipe("events", env={"EVENTPIPE_SINK": sink_url})
        assert absent.returncode == 1
        path = sink_url.removeprefix("sqlite:///")
        assert (
            absent.stderr
            == f"error: cannot read events from {sink_url}: sqlite {path}: no such database file\n"
        )
        sqlite3.connect(path).close()  # a database file without the table
    out = await eventpipe("events", "--follow", env={"EVENTPIPE_SINK": sink_url})
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr == (
        f"error: {sink_url} has no events table yet: `eventpipe migrate` creates it, as does the first consumer\n"
    )


@pytest.mark.network
async def test_an_unreachable_database_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    url = f"postgresql://eventpipe:s3cret@127.0.0.1:{closed_port}/events"
    out = await eventpipe("events", env={"EVENTPIPE_SINK": url})
    assert out.returncode == 1
    redacted = f"postgresql://eventpipe:***@127.0.0.1:{closed_port}/events"
    assert out.stderr.startswith(
        f"error: cannot read events from {redacted}: postgresql: ConnectionRefusedError"
    )
    assert "Traceback" not in out.stderr and "s3cret" not in out.stderr
    assert out.stderr.count("\n") == 1


@pytest.mark.postgres
@pytest.mark.parametrize("sink_url", ["postgresql"], indirect=True)
async def test_reading_postgresql_needs_no_write_access(sink_url: str) -> None:
    """As on a read-only standby or with a read-only role: the reader creates nothing, not even the
    writers' per-connection staging table."""
    await fill(sink_url)
    read_only = f"{sink_url}?default_transaction_read_only=on"
    out = await eventpipe("events", "-n", "1", env={"EVENTPIPE_SINK": read_only})
    assert out.returncode == 0, out.stderr
    assert event_ids(out.stdout) == ["ev-4"]
