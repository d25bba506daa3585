"""The foundation against the real broker: a round trip with the idempotent producer (acks=all) and
a consumer group that commits manually; topics ensure is idempotent with the promised configs."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline import topics
from tests.kafka_util import unique_settings

pytestmark = pytest.mark.kafka


async def test_round_trip_with_manual_commit(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    await topics.ensure(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [
            await (await producer.send(settings.raw_topic, f"r{i}".encode(), partition=0)) for i in range(10)
        ]
    finally:
        await producer.stop()
    assert [m.offset for m in sent] == list(range(10))

    consumer = AIOKafkaConsumer(
        settings.raw_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got = []
        while len(got) < 10:
            for part in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(part)
        assert [r.value for r in got] == [f"r{i}".encode() for i in range(10)]
        tp = TopicPartition(settings.raw_topic, 0)
        await consumer.commit({tp: 10})
        assert await consumer.committed(tp) == 10
    finally:
        await consumer.stop()


async def test_topics_ensure_is_idempotent_with_retention_and_size(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, raw_partitions=12)
    first = await topics.ensure(settings)
    second = await topics.ensure(settings)
    assert all("created" in line for line in first)
    assert all("exists" in line for line in second)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.raw_topic])
        assert len(described[0]["partitions"]) == 12
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.raw_topic)])
        entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
        assert int(entries["retention.ms"]) >= 7 * 24 * 3600 * 1000
        assert int(entries["max.message.bytes"]) > settings.max_body_bytes
    finally:
        await admin.close()
