"""The valve over real sockets, served as `eventpipe receiver` serves (its acceptor, not aiohttp's
server): once a request has been refused, a connection accepted or answered is held unread; it is let
through when a reservation ends and there is room, and one held past the wait is read and refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import tenants
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from producers.receiver.acceptor import Acceptor, listening
from producers.receiver.app import STATE, create_app
from producers.receiver.body import SERVER_OPTIONS
from producers.receiver.direct_routes import route_directly
from producers.receiver.valve import Valve, forget_lost
from tests.corpus import load_cases
from tests.kafka_util import read_all
from tests.ports import free_port
from tests.receiver.http_raw import head, padded, reply
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

CLICK = next(c for c in load_cases() if c.id == "topsort-spec-click")
LIMIT = 64 * 1024
SIZE = 60_000  # one body fits the bound, two do not
SMALL = 10_000  # fits alone, not beside a SIZE one

Start = Callable[[Settings], Awaitable[tuple[web.Application, int]]]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def start(directory: tenants.TenantDirectory) -> AsyncIterator[Start]:
    running: list[tuple[Acceptor, web.AppRunner]] = []

    async def serve(settings: Settings) -> tuple[web.Application, int]:
        app = create_app(settings, directory, Metrics(CollectorRegistry(), tenant_labels=False))
        runner = web.AppRunner(app, access_log=None, **SERVER_OPTIONS)
        await runner.setup()
        assert runner.server is not None
        route_directly(runner.server, app)
        valve = app[STATE].gate.valve
        forget_lost(runner.server, valve)
        port = free_port()
        acceptor = Acceptor(listening("127.0.0.1", port, reuse_port=False), runner.server, valve, None)
        acceptor.start()
        running.append((acceptor, runner))
        await wait_for(lambda: app[STATE].producer.ready, 20, "the receiver's Kafka producer to connect")
        return app, port

    yield serve
    for acceptor, runner in running:
        acceptor.close()
        await runner.cleanup()


def _valve(app: web.Application) -> Valve:
    return app[STATE].gate.valve


def _held_bytes(app: web.Application) -> tuple[int, int]:
    admission = app[STATE].gate.admission
    return admission.bytes, admission.requests


async def _fill_and_close(app: web.Application, port: int) -> Conn:
    """An admitted request holding the bound (its body held back), then one refused: the valve closes."""
    first = await asyncio.open_connection("127.0.0.1", port)
    first[1].write(head(CLICK, SIZE) + padded(CLICK, SIZE)[:1000])
    await wait_for(lambda: _held_bytes(app) == (SIZE, 1), 10, "the first request's reservation")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head(CLICK, SIZE))
    status, headers, _ = await asyncio.wait_for(reply(r), 10)
    assert (status, headers["retry-after"]) == (503, "1")
    w.close()
    assert _valve(app).closed
    return first


async def _finish(conn: Conn) -> None:
    conn[1].write(padded(CLICK, SIZE)[1000:])
    status, _, _ = await asyncio.wait_for(reply(conn[0]), 10)
    assert status == 204


async def test_held_when_accepted_then_let_through_for_room(start: Start, kafka_settings: Settings) -> None:
    app, port = await start(
        kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT, overload_wait_seconds=30)
    )
    first = await _fill_and_close(app, port)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    small = padded(CLICK, SMALL)
    w.write(head(CLICK, SMALL) + small)
    await wait_for(lambda: _valve(app).held == 1, 10, "the new connection held")
    answered = asyncio.create_task(reply(r))
    done, _ = await asyncio.wait([answered], timeout=0.3)
    assert not done and _held_bytes(app) == (SIZE, 1)  # not read: no reservation, no reply
    await _finish(first)  # its reservation ends: room for the held one
    status, _, _ = await asyncio.wait_for(answered, 10)
    assert status == 204
    for writer in (first[1], w):
        writer.close()
    await wait_for(lambda: not _valve(app).closed, 10, "the valve open again, nothing held")
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=2)
    assert sorted(len(r.value) for r in records) == [SMALL, SIZE]


async def test_held_past_the_wait_is_refused(start: Start, kafka_settings: Settings) -> None:
    wait = 0.5
    app, port = await start(
        kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT, overload_wait_seconds=wait)
    )
    first = await _fill_and_close(app, port)
    began = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head(CLICK, SMALL) + padded(CLICK, SMALL))
    status, headers, _ = await asyncio.wait_for(reply(r), 10)
    assert (status, headers["retry-after"]) == (503, "1")
    assert time.monotonic() - began >= wait * 0.9  # read once its wait was over, not before
    # Its body came whole: the connection is kept, and held again; its next request waits for room.
    assert headers.get("connection", "").lower() != "close"
    await wait_for(lambda: _valve(app).held == 1, 10, "the answered connection held")
    w.write(head(CLICK, SMALL) + padded(CLICK, SMALL))
    await _finish(first)
    status, _, _ = await asyncio.wait_for(reply(r), 10)
    assert status == 204
    for writer in (first[1], w):
        writer.close()


async def test_shutdown_closes_the_held_and_opens_the_valve(start: Start, kafka_settings: Settings) -> None:
    app, port = await start(
        kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT, overload_wait_seconds=30)
    )
    first = await _fill_and_close(app, port)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head(CLICK, SMALL) + padded(CLICK, SMALL))
    await wait_for(lambda: _valve(app).held == 1, 10, "the new connection held")
    _valve(app).open()  # what the app's on_shutdown does
    # Closed unread, as the kernel's accept queue is when the listener closes: reset, its data unread.
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(r.read(), 10)
    assert not _valve(app).closed and _valve(app).held == 0
    await _finish(first)  # the admitted request is not disturbed
    for writer in (first[1], w):
        writer.close()
