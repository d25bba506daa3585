"""The receiver's tick batcher, against a fake producer: the records of one tick share a batch, each
request hears of its own record only, a failed batch fails exactly its requests, and consecutive
ticks go to different partitions, and a broker that does not acknowledge holds up no other."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from producers.receiver.batching import KafkaUnavailable, TickBatcher

TOPIC = "raw"
LEADERS = {0: 1, 1: 2, 2: 3}  # partition: the broker leading it


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.records: list[bytes] = []
        self.capacity = capacity
        self.closed = False

    def append(self, *, timestamp: None, key: bytes | None, value: bytes, headers: object) -> object:
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """create_batch / send_batch / partitions_for as aiokafka's; each submitted batch's delivery is
    held until the test settles it."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.sent: list[tuple[int, FakeBuilder, asyncio.Future[None]]] = []
        self.changed = asyncio.Event()

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        assert topic == TOPIC and batch.closed
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, batch, delivery))
        self.changed.set()
        return delivery


class Batcher:
    def __init__(self, slow_after: float = 5.0, timeout: float = 5.0) -> None:
        self.failed: list[object] = []
        self.delivered: list[int] = []
        self.batcher = TickBatcher(
            TOPIC,
            timeout,
            self.failed.append,
            lambda _s, n: self.delivered.append(n),
            leader_of=lambda _producer, topic, partition: LEADERS[partition],
            slow_after=slow_after,
        )


def _as_producer(fake: FakeProducer) -> AIOKafkaProducer:
    return cast(AIOKafkaProducer, cast(Any, fake))


async def _until_sent(fake: FakeProducer, count: int) -> None:
    while len(fake.sent) < count:
        fake.changed.clear()
        await fake.changed.wait()


async def test_records_of_one_tick_travel_in_one_batch_and_each_request_waits_for_it() -> None:
    fake, b = FakeProducer(), Batcher()
    waiters = [b.batcher.add(_as_producer(fake), f"r{i}".encode(), []) for i in range(5)]
    await _until_sent(fake, 1)
    assert [batch.records for _, batch, _ in fake.sent] == [[b"r0", b"r1", b"r2", b"r3", b"r4"]]
    assert not any(w.done() for w in waiters)  # not acknowledged yet: no request may answer
    fake.sent[0][2].set_result(None)
    await asyncio.gather(*waiters)
    assert b.delivered == [5] and b.failed == []


async def test_a_full_batch_continues_in_another_and_only_the_failed_one_fails_its_requests() -> None:
    fake, b = FakeProducer(capacity=2), Batcher()
    waiters = [b.batcher.add(_as_producer(fake), f"r{i}".encode(), []) for i in range(3)]
    await _until_sent(fake, 2)
    assert [batch.records for _, batch, _ in fake.sent] == [[b"r0", b"r1"], [b"r2"]]
    fake.sent[0][2].set_result(None)
    fake.sent[1][2].set_exception(KafkaTimeoutError())
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert results[:2] == [None, None]
    assert isinstance(results[2], KafkaUnavailable)
    assert b.failed == [fake]  # the producer is given up, so nothing still queued in it is written later


async def test_a_batch_acknowledged_after_another_failed_tells_its_requests_so() -> None:
    fake, b = FakeProducer(capacity=1), Batcher()
    waiters = [b.batcher.add(_as_producer(fake), f"r{i}".encode(), []) for i in range(2)]
    await _until_sent(fake, 2)
    fake.sent[0][2].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaUnavailable):
        await waiters[0]
    assert not waiters[1].done()
    assert b.failed == [fake]  # the producer is given up at once: nothing new goes into it
    # The second batch was sent already: its record is written, so its request must not hear 503.
    fake.sent[1][2].set_result(None)
    assert await waiters[1] is None


async def test_records_gather_while_a_batch_is_in_flight_and_leave_together_after_it() -> None:
    fake, b = FakeProducer(), Batcher()
    first = b.batcher.add(_as_producer(fake), b"a", [])
    await _until_sent(fake, 1)
    later = [b.batcher.add(_as_producer(fake), f"b{i}".encode(), []) for i in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)  # ticks pass: nothing more is submitted while "a" is in flight
    assert len(fake.sent) == 1
    fake.sent[0][2].set_result(None)
    await first
    await _until_sent(fake, 2)
    assert fake.sent[1][1].records == [b"b0", b"b1", b"b2"]
    assert fake.sent[0][0] != fake.sent[1][0]  # consecutive batches, different partitions
    fake.sent[1][2].set_result(None)
    await asyncio.gather(*later)


async def test_close_waits_for_batches_in_flight() -> None:
    fake, b = FakeProducer(), Batcher()
    waiter = b.batcher.add(_as_producer(fake), b"a", [])
    closing = asyncio.create_task(b.batcher.close())
    await _until_sent(fake, 1)
    assert not closing.done()
    fake.sent[0][2].set_result(None)
    await closing
    assert waiter.done() and waiter.exception() is None


async def test_a_batch_its_broker_does_not_acknowledge_holds_up_no_other() -> None:
    fake, b = FakeProducer(), Batcher(slow_after=0.05)
    stuck = b.batcher.add(_as_producer(fake), b"a", [])
    await _until_sent(fake, 1)
    hung_broker = LEADERS[fake.sent[0][0]]
    # What gathers meanwhile leaves once the first batch is overdue, and avoids the silent broker's
    # partition from then on, batch after batch.
    later = []
    for i in range(4):
        later.append(b.batcher.add(_as_producer(fake), f"b{i}".encode(), []))
        await _until_sent(fake, 2 + i)
        assert LEADERS[fake.sent[-1][0]] != hung_broker
        fake.sent[-1][2].set_result(None)
    await asyncio.gather(*later)
    assert not stuck.done()  # its fate is the hung broker's: it waits for it, or for the timeout
    fake.sent[0][2].set_result(None)
    await stuck


async def test_brokers_the_probe_found_silent_are_avoided_unless_all_are() -> None:
    fake, b = FakeProducer(), Batcher()
    b.batcher.silent_nodes = frozenset({1, 2})
    for i in range(3):
        waiter = b.batcher.add(_as_producer(fake), f"a{i}".encode(), [])
        await _until_sent(fake, i + 1)
        fake.sent[-1][2].set_result(None)
        await waiter
    assert {partition for partition, _, _ in fake.sent} == {2}  # led by broker 3, the one answering
    b.batcher.silent_nodes = frozenset(LEADERS.values())
    for i in range(3):
        waiter = b.batcher.add(_as_producer(fake), f"b{i}".encode(), [])
        await _until_sent(fake, 4 + i)
        fake.sent[-1][2].set_result(None)
        await waiter
    # With no broker answering, every partition is tried: the writes then wait out the timeout.
    assert {partition for partition, _, _ in fake.sent[3:]} == {0, 1, 2}


async def test_a_batch_failed_after_its_submission_timed_out_is_not_reported_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its requests were answered 503 at the timeout; the producer fails it later, when it is closed
    (kafka.py): asyncio must not log that nobody looked at that failure."""
    fake, b = FakeProducer(), Batcher(timeout=0.05)
    waiter = b.batcher.add(_as_producer(fake), b"r", [])
    with pytest.raises(KafkaUnavailable):
        await waiter
    fake.sent.pop()[2].set_exception(KafkaUnavailable("abandoned"))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "never retrieved" not in caplog.text
