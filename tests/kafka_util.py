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


async def read_all(bootstrap: str, topic: str, expected: int, deadline_s: float = 20.0) -> list[Any]:
    """Every record of the topic, polling until `expected` have arrived or the deadline passes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        while not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in parts]
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


async def committed_total(settings: Settings) -> int:
    """Offsets settings' consumer group has committed on its raw topic, summed over the partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group)
    await consumer.start()
    try:
        total = 0
        for p in range(settings.raw_partitions):
            committed = await consumer.committed(TopicPartition(settings.raw_topic, p))
            total += committed or 0
        return total
    finally:
        await consumer.stop()
