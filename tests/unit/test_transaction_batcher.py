"""TransactionBatcher's decisions, against a fake producer that records what it was asked to do (the
real broker's part is tests/integration/test_transactions.py): requests arriving while a transaction is
under way share the next; a failed write aborts the transaction and refuses all its requests; a commit
once sent is waited for past the produce timeout; records no transaction took are refused at the
timeout, unwritten."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from producers.receiver.batching import KafkaUnavailable
from producers.receiver.transactions import TransactionBatcher

TIMEOUT = 0.2
HEADERS = [("source", b"topsort")]


class FakeTxn:
    def __init__(self) -> None:
        self.partitions: set[int] = set()

    def maybe_add_partition_to_txn(self, tp: Any) -> None:
        self.partitions.add(tp.partition)


class FakeProducer:
    """begin / send_batch / commit, with a gate that holds the commit until opened."""

    def __init__(self, *, fail_sends: bool = False) -> None:
        self._txn_manager = FakeTxn()
        self.fail_sends = fail_sends
        self.commit_gate = asyncio.Event()
        self.commit_gate.set()
        self.transactions: list[int] = []  # records per committed transaction
        self._open = 0
        self.began = asyncio.Event()

    async def begin_transaction(self) -> None:
        self.began.set()
        self._open = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> Any:
        return BatchBuilder(256 * 1024, 0, is_transactional=True)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_sends:
            delivery.set_exception(KafkaError("NotEnoughReplicas"))
        else:
            self._open += builder.record_count()
            delivery.set_result(None)
        return delivery

    async def commit_transaction(self) -> None:
        await self.commit_gate.wait()
        self.transactions.append(self._open)


class Harness:
    def __init__(self, producer: FakeProducer | None) -> None:
        self.producer = producer
        self.failed: list[object] = []
        self.outcomes: list[str] = []
        self.batcher = TransactionBatcher(
            "raw",
            TIMEOUT,
            lambda: self.producer,  # type: ignore[arg-type,return-value]
            self.failed.append,
            lambda seconds, records: None,
            self.outcomes.append,
            leader_of=lambda producer, topic, partition: 1,
        )

    def add(self, value: bytes = b"{}") -> asyncio.Future[None]:
        return self.batcher.add(self.producer, value, HEADERS)  # type: ignore[arg-type]


async def test_requests_arriving_during_a_commit_share_the_next_transaction() -> None:
    producer = FakeProducer()
    h = Harness(producer)
    producer.commit_gate.clear()
    first = [h.add() for _ in range(3)]
    await producer.began.wait()
    later = [h.add() for _ in range(4)]
    producer.commit_gate.set()
    await asyncio.gather(*first, *later)
    assert producer.transactions == [3, 4]
    assert h.outcomes == ["committed", "committed"] and h.failed == []


async def test_a_failed_write_aborts_and_refuses_every_request_of_the_transaction() -> None:
    producer = FakeProducer(fail_sends=True)
    h = Harness(producer)
    waiters = [h.add() for _ in range(3)]
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(o) for o in outcomes] == [KafkaUnavailable] * 3
    assert producer.transactions == []  # never committed
    assert h.failed == [producer] and h.outcomes == ["aborted"]


async def test_a_commit_once_sent_is_waited_for_past_the_produce_timeout() -> None:
    producer = FakeProducer()
    h = Harness(producer)
    producer.commit_gate.clear()
    waiter = h.add()
    # Refusing now could be a phantom: the coordinator may still commit.
    done, _ = await asyncio.wait([waiter], timeout=3 * TIMEOUT)
    assert not done
    producer.commit_gate.set()
    await waiter
    assert producer.transactions == [1]


async def test_records_wait_for_a_producer_and_are_refused_unwritten_at_the_timeout() -> None:
    h = Harness(None)  # the producer is being replaced
    expired = h.add()
    with pytest.raises(KafkaUnavailable, match="not written to Kafka in time"):
        await expired
    waiting = h.add()
    producer = FakeProducer()
    h.producer = producer
    h.batcher.producer_changed()
    await waiting
    assert producer.transactions == [1]  # only the record that had not expired


async def test_close_refuses_what_no_transaction_took() -> None:
    h = Harness(None)
    waiter = h.add()
    await h.batcher.close()
    with pytest.raises(KafkaUnavailable, match="receiver stopping"):
        await waiter
