"""Mutation fuzzing at the HTTP level: every corpus request, mutated (tests/mutations.py), through the
real aiohttp app and its real Kafka producer. Each reply is a 2xx or a 4xx in the vendor's own shape,
never a 5xx, and every 2xx is on Kafka. EVENTPIPE_FUZZ_EXAMPLES sets the cases per vendor (CI's default
keeps the run short; raise it for a long run)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.settings import Settings
from tests.corpus import load_cases
from tests.kafka_util import read_all
from tests.mutations import hostile_requests
from tests.receiver.conftest import ClientFactory
from tests.vendor_replies import assert_vendor_reply

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
) -> AsyncIterator[FuzzRun]:
    client = await receiver_factory(kafka_settings)
    run = FuzzRun(client, fuzz_tally.setdefault(f"HTTP mutation fuzz {request.node.name}", Counter()))
    yield run
    # Nothing acknowledged is lost: every 2xx of this run is a record on its topic.
    accepted = sum(n for status, n in run.statuses.items() if status < 300)
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=accepted)
    assert len(records) == accepted


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
