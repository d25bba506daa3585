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
The batches of one submission are delivered, or fail, each on its own.

A broker that hangs must not hold up the others (Kafka's own answer is KIP-794's adaptive partitioning):
the next submission waits for the batches in flight at most SLOW_BATCH_SECONDS, and keyless batches
then avoid the partitions led by a broker that has a batch unacknowledged for longer than that, or
that the receiver's probe found silent. Only the requests already in the hung broker's batch wait out
the produce timeout; the rest go on to the partitions whose leaders answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

Headers = Sequence[tuple[str, bytes]]

# How long a batch may go unacknowledged before its broker counts as slow. A healthy acks=all write
# takes milliseconds; a leader lost to a crash or a hang is replaced by the controllers in seconds.
SLOW_BATCH_SECONDS = 0.5

# The leader of a partition of the topic in the producer's metadata (None when unknown).
LeaderOf = Callable[[AIOKafkaProducer, str, int], "int | None"]


def metadata_leader(producer: AIOKafkaProducer, topic: str, partition: int) -> int | None:
    leader = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
    return None if leader is None or leader < 0 else int(leader)


def answering(partitions: list[int], leaders: dict[int, int | None], slow: Set[int | None]) -> list[int]:
    """Pure: the partitions whose leader is not among the slow nodes; every one, when none is left."""
    return [p for p in partitions if leaders[p] not in slow] or partitions


class Spread:
    """Which partition a batch goes to: a key's own (its records wait for their leader like any keyed
    producer's), else round robin over the partitions whose leaders answer. Round robin, so that
    consecutive batches go to different partitions (a batch does not wait for the previous one's to
    leave: aiokafka queues one batch per partition) and records spread over all partitions."""

    def __init__(self) -> None:
        self._next = 0
        self._keyed_partitioner = DefaultPartitioner()

    def partition(self, key: bytes | None, partitions: list[int], answering: list[int]) -> int:
        if not partitions:
            raise KafkaUnavailable("no partitions known for the topic")
        if key is not None:
            return int(self._keyed_partitioner(key, partitions, partitions))
        self._next = (self._next + 1) % len(answering)
        return answering[self._next]


class Batcher(Protocol):
    """What the receiver's producer (kafka.py) hands its records to: TickBatcher, or TransactionBatcher
    (transactions.py) when the receiver writes in transactions."""

    silent_nodes: frozenset[int]

    def add(
        self, producer: AIOKafkaProducer, value: bytes, headers: Headers, key: bytes | None = None
    ) -> asyncio.Future[None]: ...

    async def settled(self, producer: AIOKafkaProducer) -> None: ...

    async def close(self) -> None: ...


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the record in time, or is not connected."""


@dataclass(slots=True)
class Batch:
    """An open batch: aiokafka's BatchBuilder and the futures of the requests whose records it holds."""

    builder: Any  # aiokafka.producer.message_accumulator.BatchBuilder (untyped)
    key: bytes | None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass(slots=True)
class _Tick:
    producer: AIOKafkaProducer
    keyless: list[Batch] = field(default_factory=list)  # the last one is open, the others are full
    keyed: list[Batch] = field(default_factory=list)


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
        leader_of: LeaderOf = metadata_leader,
        slow_after: float = SLOW_BATCH_SECONDS,
    ) -> None:
        self._topic = topic
        self._timeout = timeout_seconds
        # Called with the producer whose batch failed (it is then given up: see RecordProducer._abandon).
        self._on_failure = on_failure
        # Called per delivered batch with its seconds from submission to acknowledgement and its records.
        self._on_delivered = on_delivered
        self._tick: _Tick | None = None
        self._spread = Spread()
        self._tasks: dict[asyncio.Task[None], AIOKafkaProducer] = {}  # submissions in flight
        self._overdue: set[asyncio.Task[None]] = set()  # in flight for longer than slow_after
        self._overdue_timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._leader_of = leader_of
        self._slow_after = slow_after
        # Batches sent and not yet acknowledged: their leader and when they were sent.
        self._unacknowledged: dict[int, tuple[int | None, float]] = {}
        self.silent_nodes: frozenset[int] = frozenset()  # the probe's finding (RecordProducer)

    def add(
        self, producer: AIOKafkaProducer, value: bytes, headers: Headers, key: bytes | None = None
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        tick = self._tick
        if tick is None or tick.producer is not producer:
            if tick is not None:
                self._submit()  # records of a producer given up meanwhile: let them fail alone
            tick = self._tick = _Tick(producer)
            if self._tasks.keys() <= self._overdue:
                self._schedule()
            else:
                self._wait_at_most(self._slow_after)
        waiter: asyncio.Future[None] = loop.create_future()
        append(producer, tick.keyless if key is None else tick.keyed, value, headers, key, waiter)
        return waiter

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._submit_scheduled)

    def _wait_at_most(self, seconds: float) -> None:
        if self._overdue_timer is None:
            self._overdue_timer = asyncio.get_running_loop().call_later(seconds, self._give_up_waiting)

    def _give_up_waiting(self) -> None:
        """The batches in flight are overdue: what gathered meanwhile leaves without them."""
        self._overdue_timer = None
        self._overdue |= self._tasks.keys()
        if self._tick is not None:
            self._submit()

    def _submit_scheduled(self) -> None:
        self._scheduled = False
        self._submit()

    def _submit(self) -> None:
        if self._overdue_timer is not None:
            self._overdue_timer.cancel()
            self._overdue_timer = None
        tick, self._tick = self._tick, None
        if tick is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(tick), name="kafka-batch")
        self._tasks[task] = tick.producer
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._overdue.discard(task)
        if self._tick is not None and self._tasks.keys() <= self._overdue:
            self._schedule()  # what gathered meanwhile, with this tick's records

    async def _deliver(self, tick: _Tick) -> None:
        producer = tick.producer
        pending = [*tick.keyless, *tick.keyed]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                partitions = sorted(await producer.partitions_for(self._topic))
                leaders = {p: self._leader_of(producer, self._topic, p) for p in partitions}
                answering = self._answering(partitions, leaders)
                submitted: dict[asyncio.Future[Any], Batch] = {}
                for batch in pending:
                    partition = self._spread.partition(batch.key, partitions, answering)
                    # Closed, the batch goes with the sender's next produce request instead of lingering
                    # for more records: this tick's are all in it.
                    batch.builder.close()
                    delivery = await producer.send_batch(batch.builder, self._topic, partition=partition)
                    # A batch still unanswered when its submission times out is failed later, when its
                    # producer is closed (kafka.py): nobody awaits it then, and asyncio would log it.
                    delivery.add_done_callback(retrieve)
                    self._unacknowledged[id(batch)] = (leaders[partition], time.monotonic())
                    submitted[delivery] = batch
                await self._settle(producer, submitted, started)
        except (KafkaError, KafkaUnavailable, TimeoutError) as exc:
            self._on_failure(producer)
            error = described(exc)
            for batch in pending:
                self._unacknowledged.pop(id(batch), None)
                resolve(batch.waiters, error)
        except BaseException:
            # Anything else (a bug, or the task cancelled at shutdown) must not leave a request waiting.
            for batch in pending:
                self._unacknowledged.pop(id(batch), None)
                resolve(batch.waiters, "record not delivered")
            raise

    async def _settle(
        self, producer: AIOKafkaProducer, submitted: dict[asyncio.Future[Any], Batch], started: float
    ) -> None:
        """Each batch's requests hear its own outcome as soon as it is known: a batch acknowledged
        after another failed was written, so its requests must not be told 503."""
        while submitted:
            done, _ = await asyncio.wait(submitted, return_when=asyncio.FIRST_COMPLETED)
            for delivery in done:
                batch = submitted.pop(delivery)
                self._unacknowledged.pop(id(batch), None)
                error = "record not delivered" if delivery.cancelled() else described(delivery.exception())
                if error is not None:
                    self._on_failure(producer)
                    resolve(batch.waiters, error)
                else:
                    resolve(batch.waiters, None)
                    self._on_delivered(time.perf_counter() - started, len(batch.waiters))

    def _answering(self, partitions: list[int], leaders: dict[int, int | None]) -> list[int]:
        """The partitions whose leader is not slow: every one, when none is left."""
        now = time.monotonic()
        slow = {
            node for node, sent in self._unacknowledged.values() if now - sent > self._slow_after
        } | self.silent_nodes
        return answering(partitions, leaders, slow)

    async def close(self) -> None:
        """Submit the open tick and wait for every batch in flight (the producer is stopped after)."""
        self._submit()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settled(self, producer: AIOKafkaProducer) -> None:
        """Until every submission to the producer has been answered: each within the produce timeout."""
        tasks = [task for task, to in self._tasks.items() if to is producer]
        if tasks:
            await asyncio.wait(tasks)


def append(
    producer: AIOKafkaProducer,
    batches: list[Batch],
    value: bytes,
    headers: Headers,
    key: bytes | None,
    waiter: asyncio.Future[None],
) -> None:
    """The record into the last of `batches`, or a new one when that is full (max_batch_size) or holds
    another key: keyless records fill one batch after another, keyed ones go in a batch per run of the
    same key."""
    batch = batches[-1] if batches and (key is None or batches[-1].key == key) else None
    if batch is None or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
        # A record always fits into a fresh batch.
        batch = Batch(producer.create_batch(), key)
        batches.append(batch)
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            raise KafkaUnavailable("record larger than a batch")  # max_request_size prevents it
    batch.waiters.append(waiter)


def retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()


def described(exc: BaseException | None) -> str | None:
    return None if exc is None else str(exc) or type(exc).__name__


def resolve(waiters: list[asyncio.Future[None]], error: str | None) -> None:
    """Success, or a KafkaUnavailable of its own for each request (a shared one would gather every
    request's traceback)."""
    for waiter in waiters:
        if waiter.done():  # resolved already, or its request was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(KafkaUnavailable(error))
