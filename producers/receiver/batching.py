"""Kafka batches of many requests' records: the records of every request that reaches its Kafka write
while the previous batch is still on its way (or, when none is, in the same event-loop tick) go into
one batch per partition (aiokafka's create_batch / send_batch), and each batch is awaited once. aiokafka's own send() takes a partitioner call, a serializer pass, an accumulator lookup
and a future per record, and under single-event traffic the records of concurrent requests left as
batches of one: a produce request, a broker append and an acknowledgement each.

Gathering while a batch is in flight costs no latency: the idempotent producer has one produce request
in flight to a broker at a time, so a record submitted meanwhile would wait for it all the same; this
way it leaves in one batch with the others instead of in a batch of its own (a broker append, an
index entry and more of the produce request each).

Each request still waits for its own record: it gets a future of its own, resolved when the batch
holding its record is acknowledged, or failed (the request then answers 503) when that batch is not.
The batches of one submission are delivered, or fail, each on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

Headers = Sequence[tuple[str, bytes]]


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the record in time, or is not connected."""


@dataclass(slots=True)
class _Batch:
    """An open batch: aiokafka's BatchBuilder and the futures of the requests whose records it holds."""

    builder: Any  # aiokafka.producer.message_accumulator.BatchBuilder (untyped)
    key: bytes | None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass(slots=True)
class _Tick:
    producer: AIOKafkaProducer
    keyless: list[_Batch] = field(default_factory=list)  # the last one is open, the others are full
    keyed: list[_Batch] = field(default_factory=list)


class TickBatcher:
    """add() puts a record into the open batch and returns the future its request awaits. The open
    batches are submitted at the end of the tick (call_soon) when nothing is in flight, else as soon as
    the batches in flight are acknowledged or have failed."""

    def __init__(
        self,
        topic: str,
        timeout_seconds: float,
        on_failure: Callable[[AIOKafkaProducer], None],
        on_delivered: Callable[[float, int], None],
    ) -> None:
        self._topic = topic
        self._timeout = timeout_seconds
        # Called with the producer whose batch failed (it is then given up: see RecordProducer._abandon).
        self._on_failure = on_failure
        # Called per delivered batch with its seconds from submission to acknowledgement and its records.
        self._on_delivered = on_delivered
        self._tick: _Tick | None = None
        self._next = 0  # round robin over partitions, one tick's keyless batch after another
        self._keyed_partitioner = DefaultPartitioner()
        self._tasks: set[asyncio.Task[None]] = set()  # submissions in flight
        self._scheduled = False

    def add(
        self, producer: AIOKafkaProducer, value: bytes, headers: Headers, key: bytes | None = None
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        tick = self._tick
        if tick is None or tick.producer is not producer:
            if tick is not None:
                self._submit()  # records of a producer given up meanwhile: let them fail alone
            tick = self._tick = _Tick(producer)
            if not self._tasks:
                self._schedule()
        batches = tick.keyless if key is None else tick.keyed
        waiter: asyncio.Future[None] = loop.create_future()
        batch = batches[-1] if batches and (key is None or batches[-1].key == key) else None
        if (
            batch is None
            or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None
        ):
            # No open batch, or it is full (max_batch_size): a record always fits into a fresh one.
            batch = _Batch(producer.create_batch(), key)
            batches.append(batch)
            if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise KafkaUnavailable("record larger than a batch")  # max_request_size prevents it
        batch.waiters.append(waiter)
        return waiter

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._submit_scheduled)

    def _submit_scheduled(self) -> None:
        self._scheduled = False
        self._submit()

    def _submit(self) -> None:
        tick, self._tick = self._tick, None
        if tick is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(tick), name="kafka-batch")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks and self._tick is not None:
            self._schedule()  # what gathered meanwhile, with this tick's records

    async def _deliver(self, tick: _Tick) -> None:
        producer = tick.producer
        submitted: list[tuple[_Batch, asyncio.Future[Any]]] = []
        pending = [*tick.keyless, *tick.keyed]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                partitions = sorted(await producer.partitions_for(self._topic))
                for batch in pending:
                    partition = self._partition(batch.key, partitions)
                    # Closed, the batch goes with the sender's next produce request instead of lingering
                    # for more records: this tick's are all in it.
                    batch.builder.close()
                    delivery = await producer.send_batch(batch.builder, self._topic, partition=partition)
                    submitted.append((batch, delivery))
                for batch, delivery in submitted:
                    await delivery
                    _resolve(batch.waiters, None)
                    self._on_delivered(time.perf_counter() - started, len(batch.waiters))
        except (KafkaError, KafkaUnavailable, TimeoutError) as exc:
            self._on_failure(producer)
            for batch in pending:
                _resolve(batch.waiters, str(exc) or type(exc).__name__)
        except BaseException:
            # Anything else (a bug, or the task cancelled at shutdown) must not leave a request waiting.
            for batch in pending:
                _resolve(batch.waiters, "record not delivered")
            raise

    def _partition(self, key: bytes | None, partitions: list[int]) -> int:
        if not partitions:
            raise KafkaUnavailable("no partitions known for the topic")
        if key is not None:
            return int(self._keyed_partitioner(key, partitions, partitions))
        # Round robin: consecutive batches go to different partitions, so a batch does not wait for
        # the previous one's to leave (aiokafka queues one batch per partition), and records spread
        # over all partitions.
        self._next = (self._next + 1) % len(partitions)
        return partitions[self._next]

    async def close(self) -> None:
        """Submit the open tick and wait for every batch in flight (the producer is stopped after)."""
        self._submit()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _resolve(waiters: list[asyncio.Future[None]], error: str | None) -> None:
    """Success, or a KafkaUnavailable of its own for each request (a shared one would gather every
    request's traceback)."""
    for waiter in waiters:
        if waiter.done():  # resolved already, or its request was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(KafkaUnavailable(error))
