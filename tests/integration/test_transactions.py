"""The receiver writing in Kafka transactions (EVENTPIPE_KAFKA_TRANSACTIONAL_ID), on the real broker:
concurrent requests share transactions and every one is stored once; and a transaction with a write the
broker refused is aborted, so that a record the broker did append for it (the phantom of a 503 without
transactions) is never read by the consumers, which read committed records only."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from pipeline import tenants
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from producers.receiver.app import STATE, create_app
from producers.receiver.kafka import KafkaUnavailable, RecordProducer
from tests.corpus import restamp
from tests.integration.conftest import Pipeline, row_count
from tests.integration.test_pipeline import accepted_cases, personalize
from tests.kafka_util import create_topics, group_offsets, unique_settings
from tests.receiver.conftest import serve, wait_until_ready
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

REQUESTS = 60
# The raw topic's record limit in the abort test: the large record is refused by the broker, the small
# one in the same transaction is appended.
SMALL_LIMIT = 20_000


async def read_partition(settings: Settings, partition: int, isolation_level: str) -> list[bytes]:
    """Every record value of one raw partition, up to its end offset (for read_committed, the last
    stable offset: every transaction before it has ended)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.raw_topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                values.extend(r.value for r in records)
        return values
    finally:
        await consumer.stop()


async def test_concurrent_requests_share_transactions_and_each_is_stored_once(
    kafka_bootstrap: str,
    sink_url: str,
    aiohttp_server: Any,
    aiohttp_client: Any,
    corpus_tenants: tenants.TenantDirectory,
) -> None:
    settings = unique_settings(
        kafka_bootstrap,
        sink=sink_url,
        batch_max_wait_ms=100,
        kafka_transactional_id=f"test-{uuid.uuid4().hex}",
    )
    await create_topics(settings)
    app = create_app(settings, corpus_tenants, Metrics(CollectorRegistry()))
    client: TestClient[web.Request, web.Application] = await serve(app, aiohttp_server, aiohttp_client)
    await wait_until_ready(client)
    pipeline = Pipeline(settings, client)
    try:
        click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
        cases = [
            personalize(restamp(click, datetime.now(UTC)), uuid.uuid4().hex[:8]) for _ in range(REQUESTS)
        ]
        replies = await asyncio.gather(*(pipeline.post(case) for case in cases))
        assert [r.status for r in replies] == [204] * REQUESTS
        registry = app[STATE].metrics.registry
        committed = registry.get_sample_value("eventpipe_kafka_transactions_total", {"outcome": "committed"})
        # Requests at once: those arriving while a transaction is under way share the next one.
        assert committed is not None and 1 <= committed < REQUESTS
        assert registry.get_sample_value("eventpipe_kafka_transactions_total", {"outcome": "aborted"}) is None

        await pipeline.start_consumer()
        await wait_for(lambda: _rows_are(settings.sink, REQUESTS), 30, f"{REQUESTS} rows")
        # Each partition's last offset is a commit marker, which no batch holds: the consumer commits
        # past it once idle, so the group's lag reads 0 (as `eventpipe status` shows it).
        await wait_for(lambda: _lag_is_zero(settings), 30, "the group's commits at the end offsets")
    finally:
        await pipeline.stop_consumers()


async def _lag_is_zero(settings: Settings) -> bool:
    committed, ends = await group_offsets(settings)
    return committed == ends


async def _rows_are(sink: str, n: int) -> bool:
    return await row_count(sink) == n


def keys_on_two_partitions(partitions: int) -> tuple[bytes, bytes]:
    """Two record keys that the producer sends to different partitions."""
    choose = DefaultPartitioner()
    every = list(range(partitions))
    first = b"k0"
    other = next(
        k
        for k in (f"k{i}".encode() for i in range(1, 100))
        if choose(k, every, every) != choose(first, every, every)
    )
    return first, other


async def test_an_aborted_transaction_leaves_nothing_the_consumers_read(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap, produce_timeout_seconds=10)
    settings = settings.replace(kafka_transactional_id=f"test-abort-{settings.raw_topic}")
    await create_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, settings.raw_topic, {"max.message.bytes": str(SMALL_LIMIT)}
                )
            ]
        )
    finally:
        await admin.close()
    small_key, large_key = keys_on_two_partitions(settings.raw_partitions)
    choose = DefaultPartitioner()
    every = list(range(settings.raw_partitions))
    small_partition = choose(small_key, every, every)

    metrics = Metrics(CollectorRegistry())
    producer = RecordProducer(settings, metrics)
    await producer.start()
    try:
        await wait_for(lambda: producer.ready, 30, "producer ready")
        headers = RecordMeta("retailrocket", "/x", "t", 0, "r").headers()
        # Added in one tick, so in one transaction, on two partitions: the broker appends the small record
        # and refuses the large one (incompressible, above the topic's limit).
        small = producer.send_with_headers(b"small-aborted", headers, small_key)
        large = producer.send_with_headers(random.Random(0).randbytes(5 * SMALL_LIMIT), headers, large_key)
        outcomes = await asyncio.gather(small, large, return_exceptions=True)
        assert [type(o) for o in outcomes] == [KafkaUnavailable, KafkaUnavailable], outcomes
        assert (
            metrics.registry.get_sample_value("eventpipe_kafka_transactions_total", {"outcome": "aborted"})
            == 1
        )

        # The next request's record waits for the producer's replacement (the other transactional id);
        # its transaction commits, and the given-up id is fenced, which aborts what it left open.
        await producer.send_with_headers(b"small-committed", headers, small_key)
    finally:
        await producer.stop()

    uncommitted = await read_partition(settings, small_partition, "read_uncommitted")
    # The broker did write the refused request's record: without a transaction it would be stored.
    assert uncommitted == [b"small-aborted", b"small-committed"]

    async def only_committed_read() -> bool:
        # Read committed, the partition ends where the aborted transaction began until the coordinator
        # has aborted it (the given-up id is fenced in the background).
        return await read_partition(settings, small_partition, "read_committed") == [b"small-committed"]

    await wait_for(only_committed_read, 30, "the committed record, and never the aborted one")
