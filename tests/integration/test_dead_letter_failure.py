"""When the dead-letter topic refuses a batch's rejects, the batch is fetched again and nothing is
committed past it — even while later batches keep arriving — so a late event is never dropped between
the sink and the dead-letter topic. The failure is injected into the real worker's dead-letter send;
Kafka, the receiver and the sink are real."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from consumers.deadletter import DeadLetter
from consumers.lookup import KafkaLookup
from tests.integration.conftest import Pipeline, row_count
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
    lookup = KafkaLookup(settings.kafka_bootstrap)
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
