"""The receiver's writes in Kafka transactions (EVENTPIPE_KAFKA_TRANSACTIONAL_ID): no record of a request
answered 503 ever becomes visible to the consumers, which read committed records only.

Without them a 503 given on the produce timeout is ambiguous: the record may sit in a leader's log
waiting for its followers and be committed when they return, stored though its request was refused (the
phantoms of the cluster ledger, docs/SCALING.md). Here the records of every request that arrives while a
transaction is under way go out together in the next one (a group commit): begin, one batch per
partition, every acknowledgement, commit, and only then the answers.

- A transaction whose writes fail or time out is never committed. Its requests are answered 503 and its
  producer is replaced by one with the worker's other transactional id (kafka.py). The given-up id is
  fenced in the background: a producer started under it makes the coordinator abort what the old one
  left open. (aiokafka's own abort would first wait for the batches still in flight, which an
  idempotent producer never expires.)
- Once the commit is sent its outcome is the coordinator's, and a 503 before it is known could be a
  phantom. So the requests wait for it, however long that takes. The coordinator always decides: it
  commits, or it aborts the transaction once it outlives the producer's transaction timeout.
- Requests whose records are not yet in a transaction get 503 after produce_timeout_seconds: nothing
  of them was written.

The cost, measured in docs/SCALING.md: the commit's round trip on every request, and the broker's work
per transaction (AddPartitionsToTxn, EndTxn, a marker per partition)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.producer import sender as aiokafka_sender
from aiokafka.structs import TopicPartition

from producers.receiver.batching import (
    Batch,
    Headers,
    KafkaUnavailable,
    LeaderOf,
    Spread,
    answering,
    append,
    described,
    metadata_leader,
    resolve,
    retrieve,
)

log = structlog.get_logger("eventpipe.receiver.kafka")

# After a commit the coordinator writes its markers in the background, and the next transaction's first
# AddPartitionsToTxn is answered CONCURRENT_TRANSACTIONS until they are written: about a millisecond
# here. aiokafka then waits 20 ms (its BACKOFF_OVERRIDE), which became every request's latency.
CONCURRENT_TRANSACTIONS_BACKOFF_SECONDS = 0.002


def use_short_concurrent_transactions_backoff() -> None:
    aiokafka_sender.BACKOFF_OVERRIDE = CONCURRENT_TRANSACTIONS_BACKOFF_SECONDS


# The producer records go to now; None while it is being replaced (they wait for its successor).
CurrentProducer = Callable[[], "AIOKafkaProducer | None"]


@dataclass(slots=True)
class _Record:
    value: bytes
    headers: Headers
    key: bytes | None
    waiter: asyncio.Future[None]
    since: float  # the loop's time when it arrived


class TransactionBatcher:
    """add() queues a record and returns the future its request awaits: resolved when the transaction
    holding the record commits, failed (KafkaUnavailable) when it does not or when no transaction took
    the record within the produce timeout. One transaction at a time; what arrives meanwhile goes into
    the next."""

    def __init__(
        self,
        topic: str,
        timeout_seconds: float,
        current: CurrentProducer,
        on_failure: Callable[[AIOKafkaProducer], None],
        on_delivered: Callable[[float, int], None],
        on_outcome: Callable[[str], None],
        leader_of: LeaderOf = metadata_leader,
    ) -> None:
        self._topic = topic
        self._timeout = timeout_seconds
        self._current = current
        # Called with the producer of a transaction that was not committed: it is replaced (kafka.py).
        self._on_failure = on_failure
        # Per committed batch: its seconds from the transaction's start to the commit, and its records.
        self._on_delivered = on_delivered
        self._on_outcome = on_outcome  # "committed" or "aborted", per transaction
        self._leader_of = leader_of
        self._spread = Spread()
        self._pending: deque[_Record] = deque()
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._producer_ready = asyncio.Event()
        self._busy: AIOKafkaProducer | None = None  # the producer of the transaction under way
        self._transaction_ended: asyncio.Future[None] | None = None
        self.silent_nodes: frozenset[int] = frozenset()  # the probe's finding (RecordProducer)
        use_short_concurrent_transactions_backoff()

    def add(
        self, producer: AIOKafkaProducer, value: bytes, headers: Headers, key: bytes | None = None
    ) -> asyncio.Future[None]:
        """`producer` is not used: a record not yet sent goes with whichever producer is current when
        its transaction begins."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        now = loop.time()
        self._pending.append(_Record(value, headers, key, waiter, now))
        if self._expiry is None:
            self._expiry = loop.call_at(now + self._timeout, self._expire)
        if self._task is None:
            # Starts after this tick: the records of the tick's other requests join the transaction.
            self._task = loop.create_task(self._run(), name="kafka-transactions")
        return waiter

    def producer_changed(self) -> None:
        """A new producer is ready: the records waiting for one go with it."""
        self._producer_ready.set()

    def _expire(self) -> None:
        """Records no transaction took within the timeout are answered 503: none of them was written."""
        loop = asyncio.get_running_loop()
        self._expiry = None
        # A timer may fire up to the loop's clock resolution early (uvloop's is a millisecond).
        cutoff = loop.time() - self._timeout + 0.002
        while self._pending and self._pending[0].since <= cutoff:
            resolve([self._pending.popleft().waiter], "not written to Kafka in time")
        if self._pending:
            self._expiry = loop.call_at(self._pending[0].since + self._timeout, self._expire)

    async def _run(self) -> None:
        try:
            while self._pending:
                producer = self._current()
                if producer is None:
                    self._producer_ready.clear()
                    await self._producer_ready.wait()
                    continue
                records = [r for r in self._pending if not r.waiter.done()]
                self._pending.clear()
                if self._expiry is not None:
                    self._expiry.cancel()
                    self._expiry = None
                if records:
                    await self._transaction(producer, records)
        finally:
            self._task = None

    async def _transaction(self, producer: AIOKafkaProducer, records: list[_Record]) -> None:
        self._busy = producer
        self._transaction_ended = asyncio.get_running_loop().create_future()
        try:
            await self._write_and_commit(producer, records)
        except BaseException:
            # Cancelled (shutdown) or a bug: no request may be left waiting.
            resolve([record.waiter for record in records], "record not delivered")
            raise
        finally:
            self._busy = None
            self._transaction_ended.set_result(None)

    async def _write_and_commit(self, producer: AIOKafkaProducer, records: list[_Record]) -> None:
        started = time.perf_counter()
        batches: list[Batch] = []
        try:
            async with asyncio.timeout(self._timeout):
                batches = _batches(producer, records)
                await producer.begin_transaction()
                partitions = sorted(await producer.partitions_for(self._topic))
                leaders = {p: self._leader_of(producer, self._topic, p) for p in partitions}
                fit = answering(partitions, leaders, self.silent_nodes)
                # aiokafka's send() adds its partition to the transaction; send_batch leaves it to us.
                txn = _transaction_manager(producer)
                deliveries: list[asyncio.Future[Any]] = []
                for batch in batches:
                    partition = self._spread.partition(batch.key, partitions, fit)
                    batch.builder.close()
                    txn.maybe_add_partition_to_txn(TopicPartition(self._topic, partition))
                    delivery = await producer.send_batch(batch.builder, self._topic, partition=partition)
                    delivery.add_done_callback(retrieve)
                    deliveries.append(delivery)
                done, _ = await asyncio.wait(deliveries, return_when=asyncio.FIRST_EXCEPTION)
                for delivery in done:
                    if delivery.cancelled():
                        raise KafkaUnavailable("batch not delivered")
                    if (error := delivery.exception()) is not None:
                        raise KafkaUnavailable(described(error))
        except Exception as exc:  # nothing is committed before commit_transaction
            self._aborted(producer, records, exc)
            return
        try:
            await self._commit(producer, len(records))
        except Exception as exc:
            # The coordinator refused the commit (the transaction timed out, or the producer was
            # fenced: either way it was aborted) or the producer failed before sending it.
            self._aborted(producer, records, exc)
            return
        seconds = time.perf_counter() - started
        for batch in batches:
            resolve(batch.waiters, None)
            self._on_delivered(seconds, len(batch.waiters))
        self._on_outcome("committed")

    async def _commit(self, producer: AIOKafkaProducer, records: int) -> None:
        """No deadline (see the module's docstring), but a commit still unanswered after each produce
        timeout is logged, with what aiokafka is waiting for."""
        commit = asyncio.ensure_future(producer.commit_transaction())
        began = time.monotonic()
        try:
            while not (await asyncio.wait([commit], timeout=self._timeout))[0]:
                seconds = round(time.monotonic() - began, 1)
                log.warning(
                    "kafka_commit_waiting", seconds=seconds, records=records, **_waiting_for(producer)
                )
        finally:
            if not commit.done():
                commit.cancel()  # the task itself was cancelled (shutdown)
        commit.result()

    def _aborted(self, producer: AIOKafkaProducer, records: list[_Record], exc: BaseException) -> None:
        self._on_failure(producer)
        error = described(exc) or "transaction aborted"
        log.warning("kafka_transaction_aborted", error=error, records=len(records))
        resolve([record.waiter for record in records], error)
        self._on_outcome("aborted")

    async def settled(self, producer: AIOKafkaProducer) -> None:
        """Until no transaction of the producer is under way."""
        if self._busy is producer and self._transaction_ended is not None:
            await asyncio.shield(self._transaction_ended)

    async def close(self) -> None:
        """Called once the requests are drained: the transaction under way ends (its commit may take as
        long as the coordinator does), and records no transaction took are refused."""
        task = self._task
        if task is not None:
            if self._transaction_ended is not None and self._busy is not None:
                await asyncio.wait([self._transaction_ended], timeout=2 * self._timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        resolve([record.waiter for record in self._pending], "receiver stopping")
        self._pending.clear()


def _batches(producer: AIOKafkaProducer, records: list[_Record]) -> list[Batch]:
    keyless: list[Batch] = []
    keyed: list[Batch] = []
    for r in records:
        append(producer, keyless if r.key is None else keyed, r.value, r.headers, r.key, r.waiter)
    return [*keyless, *keyed]


def _waiting_for(producer: AIOKafkaProducer) -> dict[str, Any]:
    """What aiokafka's transaction is at, for the log: its internals, so nothing if they have moved."""
    try:
        txn = _transaction_manager(producer)
        coordinators = cast(Any, producer)._sender._coordinators
        return {
            "state": txn.state.name,
            "partitions_to_add": len(txn.partitions_to_add()),
            "coordinator": coordinators.get(CoordinationType.TRANSACTION),
        }
    except AttributeError:
        return {}


def _transaction_manager(producer: AIOKafkaProducer) -> Any:
    return producer._txn_manager
