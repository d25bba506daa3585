"""Helpers for tests that use the real broker: throw-away topics and reading records back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import topics
from pipeline.settings import Settings


def unique_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topics and group of their own, so tests never see each other's records."""
    tag = uuid.uuid4().hex[:10]
    base = Settings(
        kafka_bootstrap=bootstrap,
        raw_topic=f"test.{tag}.raw",
        dlq_topic=f"test.{tag}.dlq",
        consumer_group=f"test-{tag}",
        raw_partitions=3,
        produce_timeout_seconds=5.0,
        log_format="json",
    )
    return base.replace(**overrides)


async def create_topics(settings: Settings) -> None:
    await topics.ensure(settings)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in parts]


async def read_all(bootstrap: str, topic: str, expected: int, deadline_s: float = 20.0) -> list[Any]:
    """Every record of the topic, polling until `expected` have arrived or the deadline passes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        end = time.monotonic() + deadline_s
        while len(records) < expected and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def record_count(bootstrap: str, topic: str) -> int:
    """How many records the topic holds right now (the sum of its partitions' end offsets): with
    every send awaited before its reply, a count taken after the replies is exact, with no waiting."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await _partitions(consumer, topic))
        return sum(ends.values())
    finally:
        await consumer.stop()


async def group_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition of the raw topic: the offset the settings' consumer group has committed (0 when
    none) and the end offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.raw_topic, p) for p in range(settings.raw_partitions)]
        ends = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) or 0 for tp in tps}
        return committed, {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def read_below(
    bootstrap: str, topic: str, offsets: dict[int, int], deadline_s: float = 30.0
) -> list[Any]:
    """The records of each partition below the given offset (e.g. everything a group has committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p, offset in offsets.items() if offset > 0]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        end = time.monotonic() + deadline_s
        pending = set(tps)
        while pending:
            assert time.monotonic() < end, f"records below {offsets} not read within {deadline_s}s"
            for tp, part in (await consumer.getmany(*pending, timeout_ms=500)).items():
                records.extend(r for r in part if r.offset < offsets[tp.partition])
                if await consumer.position(tp) >= offsets[tp.partition]:
                    pending.discard(tp)
                    consumer.pause(tp)
        return records
    finally:
        await consumer.stop()


async def committed_total(settings: Settings) -> int:
    """Offsets the settings' consumer group has committed on its raw topic, summed over the partitions."""
    committed, _ = await group_offsets(settings)
    return sum(committed.values())
