"""When the dead-letter topic refuses a batch's rejects, the batch is fetched again and nothing is
committed past it — even while later batches keep arriving — so a late event is never dropped between
the sink and the dead-letter topic. The failure is injected into the real worker's dead-letter send;
Kafka, the receiver and the sink are real."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from consumers.deadletter import DeadLetter
from consumers.lookup import KafkaLookup
from pipeline.kafka_security import kafka_client_options
from pipeline.record import RecordMeta
from tests.corpus import restamp
from tests.integration.conftest import Pipeline, row_count
from tests.integration.test_pipeline import accepted_cases, personalize
from tests.integration.traffic import post_clicks
from tests.kafka_util import read_all, record_count
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka


class FailingDeadLetters:
    """Wraps the worker's own send: refuses while `failing`, counting attempts and letters."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self.failing = True
        self.refused = 0
        self.letters_refused: list[int] = []

    async def __call__(self, letters: Sequence[DeadLetter], dead_at: datetime) -> None:
        if self.failing and letters:
            self.refused += 1
            self.letters_refused.append(len(letters))
            raise KafkaConnectionError("injected: dead-letter topic unreachable")
        await self._send(letters, dead_at)


async def committed(pipeline: Pipeline, lookup: KafkaLookup) -> dict[TopicPartition, int]:
    tps = (await lookup.partitions([pipeline.settings.raw_topic]))[pipeline.settings.raw_topic]
    return await lookup.committed(pipeline.settings.consumer_group, tps)


async def test_refused_dead_letters_block_the_commit_until_sent(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    worker = await pipeline.start_consumer()
    failing = FailingDeadLetters(worker._dlq.send_all)
    worker._dlq.send_all = failing  # type: ignore[method-assign]
    lookup = KafkaLookup(kafka_client_options(settings))
    await lookup.start()
    try:
        (late_id,) = await post_clicks(pipeline, 1, at=datetime.now(UTC) - timedelta(hours=72))
        await post_clicks(pipeline, 3)
        await wait_for(lambda: failing.refused >= 2, 30, "the batch with the late event to be retried")

        # Later batches arrive and are stored while the dead letter still cannot be sent ...
        await post_clicks(pipeline, 2)

        async def five_rows() -> bool:
            return await row_count(settings.sink) == 5

        await wait_for(five_rows, 30, "the valid clicks to be stored")
        refused_before = failing.refused
        await wait_for(lambda: failing.refused > refused_before, 30, "another retry of the late event")
        # ... but no commit moves past the record whose dead letter is unsent: every retry carries it.
        assert all(n == 1 for n in failing.letters_refused), failing.letters_refused
        assert await record_count(settings.kafka_bootstrap, settings.dlq_topic) == 0
        records = await read_all(settings.kafka_bootstrap, settings.raw_topic, 6)
        late = next(r for r in records if late_id.encode() in r.value)
        late_tp = TopicPartition(late.topic, late.partition)
        assert (await committed(pipeline, lookup)).get(late_tp, 0) <= late.offset

        failing.failing = False

        async def dead_letter_sent() -> bool:
            return await record_count(settings.kafka_bootstrap, settings.dlq_topic) == 1

        await wait_for(dead_letter_sent, 30, "the late event's dead letter")

        async def all_committed() -> bool:
            return sum((await committed(pipeline, lookup)).values()) == 6

        await wait_for(all_committed, 30, "the offsets of all six records to be committed")
        assert await row_count(settings.sink) == 5
    finally:
        await lookup.close()


class HeldDeadLetters(FailingDeadLetters):
    """Refuses like FailingDeadLetters, but only once `release` is set: until then the batch stays
    in the sink step while the worker fetches and prepares the next one."""

    def __init__(self, send: Any) -> None:
        super().__init__(send)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, letters: Sequence[DeadLetter], dead_at: datetime) -> None:
        if self.failing and letters:
            self.holding.set()
            await self.release.wait()
            self.failing = False  # this refusal only: the retry goes through
            self.refused += 1
            raise KafkaConnectionError("injected: dead-letter topic unreachable")
        await self._send(letters, dead_at)


async def produce_click(producer: AIOKafkaProducer, topic: str, partition: int, at: datetime) -> None:
    """One Topsort click request as the receiver writes it, onto a chosen partition."""
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    case = personalize(restamp(click, at), uuid.uuid4().hex[:8])
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    meta = RecordMeta("topsort", "events", "demo", now_ms, uuid.uuid4().hex)
    await producer.send_and_wait(topic, case.body, headers=meta.headers(), partition=partition)


async def test_a_batch_prepared_behind_an_abandoned_one_is_fetched_again(pipeline: Pipeline) -> None:
    """The worker prepares the next batch while one is in the sink step. When that one is abandoned,
    the rewind must cover the next batch too: it may hold partitions the abandoned one does not, and
    the consumer's position there is already past it."""
    settings = pipeline.settings
    worker = await pipeline.start_consumer()
    held = HeldDeadLetters(worker._dlq.send_all)
    worker._dlq.send_all = held  # type: ignore[method-assign]
    registry = pipeline.metrics[-1].registry

    def prepared() -> float:
        return registry.get_sample_value("eventpipe_consumer_batch_records_count") or 0.0

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    lookup = KafkaLookup(kafka_client_options(settings))
    await lookup.start()
    try:
        await produce_click(producer, settings.raw_topic, 0, datetime.now(UTC) - timedelta(hours=72))
        await wait_for(held.holding.is_set, 30, "the late click's batch to reach its dead letter")
        before = prepared()
        for _ in range(3):
            await produce_click(producer, settings.raw_topic, 1, datetime.now(UTC))
        await wait_for(lambda: prepared() > before, 30, "the next batch (partition 1) to be prepared")
        held.release.set()

        async def stored_and_sent() -> bool:
            return (
                await row_count(settings.sink) == 3
                and await record_count(settings.kafka_bootstrap, settings.dlq_topic) == 1
            )

        await wait_for(stored_and_sent, 30, "partition 1's clicks stored and the late click dead-lettered")

        async def all_committed() -> bool:
            return sum((await committed(pipeline, lookup)).values()) == 4

        await wait_for(all_committed, 30, "the offsets of all four records to be committed")
        assert held.refused == 1
    finally:
        await lookup.close()
        await producer.stop()
