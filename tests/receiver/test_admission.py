"""Admission in the receiver: a request over the worker's bound of in-flight bytes gets the vendor's 503
with Retry-After before any of its body is read, and every admitted request gives its reservation back
however it ends: reply, refusal, Kafka down, client gone."""

from __future__ import annotations

import asyncio
import json

import pytest

from producers.receiver.app import STATE
from tests.corpus import load_cases
from tests.kafka_util import read_all, unique_settings
from tests.ports import free_port
from tests.receiver.conftest import Client
from tests.receiver.http_raw import head, padded, reply
from tests.waiting import wait_for

CASES = {c.id: c for c in load_cases()}
CLICK = CASES["topsort-spec-click"]
DFINERY = CASES["dfinery-seed-purchase"]
LIMIT = 64 * 1024
SIZE = 60_000  # one body fits the bound, two do not


def _held(client: Client) -> tuple[int, int]:
    admission = client.app[STATE].gate.admission
    return admission.bytes, admission.requests


def _sample(client: Client, name: str, labels: dict[str, str] | None = None) -> float | None:
    state = client.app[STATE]
    state.tally.flush()
    state.gate.flush()
    return state.metrics.registry.get_sample_value(name, labels or {})


async def _open(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(client.host), client.port)


@pytest.mark.kafka
async def test_over_the_bound_503_before_the_body_is_read(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT))
    body = padded(CLICK, SIZE)
    # Admitted: the headers and the first kilobyte; its Content-Length is reserved before it is read.
    r1, w1 = await _open(client)
    w1.write(head(CLICK, SIZE) + body[:1000])
    await w1.drain()
    await wait_for(lambda: _held(client) == (SIZE, 1), 10, "the first request's reservation")
    await wait_for(
        lambda: _sample(client, "eventpipe_receiver_in_flight_bytes") == SIZE, 5, "the in-flight bytes gauge"
    )

    # Over the bound: answered although not one byte of its body was sent.
    r2, w2 = await _open(client)
    w2.write(head(CLICK, SIZE))
    await w2.drain()
    status, headers, raw = await asyncio.wait_for(reply(r2), 10)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(raw)["errCode"] == "service_unavailable"  # Topsort's own shape
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(r2.read(), 10) == b""  # closed: the body will not be read
    w2.close()
    assert _held(client) == (SIZE, 1)  # the refusal reserved nothing
    rejected = {"source": "topsort", "reason": "overloaded"}
    assert _sample(client, "eventpipe_receiver_rejections_total", rejected) == 1

    # The admitted request completes and gives its bytes back.
    w1.write(body[1000:])
    await w1.drain()
    status, _, _ = await asyncio.wait_for(reply(r1), 10)
    assert status == 204
    w1.close()
    await wait_for(lambda: _held(client) == (0, 0), 5, "the reservation released")
    await wait_for(lambda: _sample(client, "eventpipe_receiver_in_flight_bytes") == 0, 5, "the gauge at 0")
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=1)
    assert [r.value for r in records] == [body]


@pytest.mark.kafka
async def test_a_refused_body_that_came_whole_keeps_its_connection(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT))
    _r1, w1 = await _open(client)
    w1.write(head(CLICK, SIZE))
    await w1.drain()
    await wait_for(lambda: _held(client) == (SIZE, 1), 10, "the first request's reservation")
    r2, w2 = await _open(client)
    whole = padded(CLICK, 10_000)  # with the first one's, above the bound
    w2.write(head(CLICK, len(whole)) + whole)
    await w2.drain()
    status, headers, _ = await asyncio.wait_for(reply(r2), 10)
    assert status == 503
    assert headers.get("connection", "").lower() != "close"
    # Nothing of it is left to read: the same connection serves the next request.
    w2.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await asyncio.wait_for(reply(r2), 10)
    assert status == 200
    for writer in (w1, w2):
        writer.close()
    await wait_for(lambda: _held(client) == (0, 0), 10, "the reservation released on disconnect")


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param({"Content-Type": "application/json"}, CLICK.body, 401, id="no-credentials"),
        pytest.param(CLICK.headers, b"{not json", 400, id="malformed"),
        pytest.param(CLICK.headers, b" " * (LIMIT + 1), 413, id="too-large"),
        pytest.param({**CLICK.headers, "Content-Type": "text/csv"}, CLICK.body, 415, id="content-type"),
        pytest.param(CLICK.headers, CLICK.body, 204, id="accepted"),
    ],
)
async def test_the_reservation_is_released_whatever_the_reply(  # type: ignore[no-untyped-def]
    receiver_factory, kafka_settings, headers: dict[str, str], body: bytes, status: int
) -> None:
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT))
    for _ in range(3):  # a leak of even one body would refuse the next request
        resp = await client.post(CLICK.path, headers=headers, data=body)
        assert resp.status == status, await resp.text()
        assert _held(client) == (0, 0)


@pytest.mark.kafka
async def test_the_reservation_is_released_when_the_client_goes(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT))
    for _ in range(3):
        _reader, writer = await _open(client)
        writer.write(head(CLICK, SIZE) + b" " * 100)
        await writer.drain()
        await wait_for(lambda: _held(client) == (SIZE, 1), 10, "the reservation")
        writer.close()  # gone halfway through its body
        await wait_for(lambda: _held(client) == (0, 0), 10, "the reservation released on disconnect")
    resp = await client.post(CLICK.path, headers=CLICK.headers, data=padded(CLICK, SIZE))
    assert resp.status == 204


@pytest.mark.network
async def test_the_reservation_is_released_when_kafka_is_down(receiver_factory) -> None:  # type: ignore[no-untyped-def]
    settings = unique_settings(f"127.0.0.1:{free_port()}", max_body_bytes=LIMIT, max_in_flight_bytes=LIMIT)
    client = await receiver_factory(settings, wait_ready=False)
    for _ in range(3):
        resp = await client.post(DFINERY.path, headers=DFINERY.headers, data=DFINERY.body)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert _held(client) == (0, 0)
    refused = {"source": "dfinery", "reason": "unavailable"}
    assert _sample(client, "eventpipe_receiver_rejections_total", refused) == 3
