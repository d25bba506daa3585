"""Mutation fuzzing at the HTTP level: every corpus request, mutated (tests/mutations.py), through the
real aiohttp app and its real Kafka producer. Each reply is a 2xx or a 4xx in the vendor's own shape,
never a 5xx; every 2xx is on Kafka, and a real consumer stores every event they hold.
EVENTPIPE_FUZZ_EXAMPLES sets the cases per vendor (CI's default keeps the run short; raise it for a
long run)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.settings import Settings
from tests.corpus import load_cases
from tests.integration.conftest import Pipeline
from tests.kafka_util import committed_total, read_all
from tests.mutations import hostile_requests
from tests.receiver.conftest import ClientFactory
from tests.vendor_replies import assert_vendor_reply
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

EXAMPLES = int(os.environ.get("EVENTPIPE_FUZZ_EXAMPLES", "400"))
CASES = load_cases()
BY_VENDOR = {vendor: [c for c in CASES if c.vendor == vendor] for vendor in sorted({c.vendor for c in CASES})}


@dataclass
class FuzzRun:
    client: TestClient[web.Request, web.Application]
    statuses: Counter[int]


@pytest.fixture
async def fuzz_run(
    request: pytest.FixtureRequest,
    receiver_factory: ClientFactory,
    kafka_settings: Settings,
    fuzz_tally: dict[str, Counter[int]],
    figures: list[str],
    tmp_path: Path,
) -> AsyncIterator[FuzzRun]:
    # Without Retail Rocket's 50 requests/s per site, which would answer most of its cases 429 unread.
    kafka_settings = kafka_settings.replace(rate_limits={"retailrocket": 0.0})
    client = await receiver_factory(kafka_settings)
    run = FuzzRun(client, fuzz_tally.setdefault(f"HTTP mutation fuzz {request.node.name}", Counter()))
    yield run
    # Nothing acknowledged is lost: every 2xx of this run is a record on its topic...
    accepted = sum(n for status, n in run.statuses.items() if status < 300)
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=accepted)
    assert len(records) == accepted
    # ...and a real consumer gets through all of them, odd as they are, and stores every event: never a
    # stopped worker, never a dead letter (the window is opened wide, so the corpus's old event times
    # reach the sink): what the receiver accepts, the consumer can store.
    consumer_settings = kafka_settings.replace(
        sink=f"sqlite:///{tmp_path / 'fuzz.db'}",
        window_hours=1e6,
        future_skew_seconds=1e9,
        batch_max_wait_ms=100,
    )
    pipe = Pipeline(consumer_settings, client)
    await pipe.start_consumer()

    async def consumed() -> bool:
        for _, task in pipe.workers:
            if task.done():
                task.result()  # a worker that stopped: its exception fails the test
        return await committed_total(consumer_settings) >= accepted

    await wait_for(consumed, 60, f"the consumer to commit all {accepted} accepted records")
    await pipe.stop_consumers()
    outcomes: Counter[str] = Counter()
    for metric in pipe.metrics[0].registry.collect():
        if metric.name == "eventpipe_consumer_events":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] += int(sample.value)
    figures.append(
        f"consumer after {request.node.name}: {accepted} records, events {dict(sorted(outcomes.items()))}"
    )
    if set(outcomes) - {"stored", "duplicate"}:
        dead = await read_all(consumer_settings.kafka_bootstrap, consumer_settings.dlq_topic, expected=1)
        raise AssertionError(
            f"accepted, then dead-lettered: {[(dict(r.headers), r.value[:500]) for r in dead]}"
        )


@pytest.mark.parametrize("vendor", list(BY_VENDOR))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_mutated_requests_get_2xx_or_a_4xx_in_the_vendor_shape(
    vendor: str, data: st.DataObject, fuzz_run: FuzzRun
) -> None:
    req = data.draw(hostile_requests(BY_VENDOR[vendor]), label="request")
    skip = () if "Content-Type" in req.headers else ("Content-Type",)
    resp = await fuzz_run.client.post(
        req.path, params=req.query, headers=req.headers, data=req.body, skip_auto_headers=skip
    )
    body = await resp.read()
    fuzz_run.statuses[resp.status] += 1
    assert_vendor_reply(req.vendor, resp.status, resp.headers, body)
