"""Kafka unreachable: every vendor answers 503 with Retry-After in its own shape, never a 2xx, and
/readyz says not ready."""

from __future__ import annotations

import pytest

from tests.corpus import load_cases
from tests.kafka_util import unique_settings
from tests.processes import free_port

pytestmark = pytest.mark.network


ACCEPTED = [c for c in load_cases() if 200 <= c.status < 300]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ACCEPTED])
async def test_503_when_kafka_is_down(case, receiver_factory) -> None:  # type: ignore[no-untyped-def]
    settings = unique_settings(f"127.0.0.1:{free_port()}", produce_timeout_seconds=0.5)
    client = await receiver_factory(settings, wait_ready=False)
    resp = await client.request(
        case.method, case.path, params=case.query, headers=case.headers, data=case.body
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["kafka"] is False
