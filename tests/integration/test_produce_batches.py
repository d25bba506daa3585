"""Concurrent single-event requests share Kafka batches, and the receiver says how well: the
eventpipe_kafka_produce_batch_records histogram counts every record once, in as many batches as
were sent (the broker's work per record falls as batches grow: docs/PERFORMANCE.md)."""

from __future__ import annotations

import asyncio

import pytest

from producers.receiver.app import STATE
from tests.corpus import sample_per_vendor
from tests.integration.conftest import Pipeline
from tests.kafka_util import record_count

pytestmark = pytest.mark.kafka

REQUESTS = 50


async def test_concurrent_requests_share_batches_and_the_histogram_counts_them(pipeline: Pipeline) -> None:
    case = sample_per_vendor()["retailrocket"]
    replies = await asyncio.gather(*(pipeline.post(case) for _ in range(REQUESTS)))
    assert [r.status for r in replies] == [case.status] * REQUESTS

    registry = pipeline.client.app[STATE].metrics.registry
    pipeline.client.app[STATE].tally.flush()  # the histogram is written once per tick
    batches = registry.get_sample_value("eventpipe_kafka_produce_batch_records_count")
    records = registry.get_sample_value("eventpipe_kafka_produce_batch_records_sum")
    assert records == REQUESTS
    assert await record_count(pipeline.settings.kafka_bootstrap, pipeline.settings.raw_topic) == REQUESTS
    # 50 requests in flight at once: each record waits in the batch gathering while another is on its
    # way, so far fewer batches than requests go out.
    assert batches is not None and 1 <= batches < REQUESTS
