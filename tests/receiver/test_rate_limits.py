"""Rate limits in the receiver, against the real broker: a tenant over its limit gets exactly the
vendor's 429 with Retry-After, checked after authentication and before the body is read; other
tenants, sources and Retail Rocket sites keep their own budgets; nothing refused reaches Kafka."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from pipeline import tenants
from pipeline.clock import Clock
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from producers.receiver.app import create_app
from tests.corpus import PARTNER_ID, Case, sample_per_vendor
from tests.kafka_util import read_all, record_count
from tests.receiver.conftest import wait_until_ready

pytestmark = pytest.mark.kafka

SAMPLES = sample_per_vendor()
SHOP_B_KEY = "ep_test_key_2"
# One token an hour: nothing refills while a test runs, so the counts do not depend on timing.
HOURLY = 1 / 3600
MESSAGE = "rate limit exceeded"
EXPECTED_429: dict[str, Any] = {
    "topsort": {
        "errCode": "too_many_requests",
        "docUrl": "https://docs.topsort.com/reference/errors",
        "message": MESSAGE,
    },
    "retailrocket": {"error": {"code": "rate_limited", "message": MESSAGE, "path": None}},
    "dfinery": {"result_code": 4006, "result_msg": "API RateLimit exceeded.", "result_data": None},
    "impression": {
        "errors": {
            "message": MESSAGE,
            "error": {
                "status": 429,
                "name": "TooManyRequestsError",
                "message": MESSAGE,
                "code": "too_many_requests",
            },
        }
    },
}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def start_receiver(
    aiohttp_client: Callable[..., Awaitable[Client]], kafka_settings: Settings
) -> Callable[..., Awaitable[Client]]:
    async def start(
        directory: tenants.TenantDirectory, clock: Clock | None = None, **overrides: Any
    ) -> Client:
        settings = kafka_settings.replace(**overrides)
        app = create_app(settings, directory, Metrics(CollectorRegistry()), clock=clock)
        client = await aiohttp_client(app)
        await wait_until_ready(client)
        return client

    return start


def _with(directory: tenants.TenantDirectory, tenant_id: str, **changes: Any) -> tenants.TenantDirectory:
    return tenants.TenantDirectory(
        tuple(dataclasses.replace(t, **changes) if t.id == tenant_id else t for t in directory.tenants)
    )


async def _post(client: Client, case: Case, **changes: Any) -> Any:
    params = {**case.query, **changes.pop("query", {})}
    headers = {**case.headers, **changes.pop("headers", {})}
    return await client.post(case.path, params=params, headers=headers, data=changes.pop("data", case.body))


@pytest.mark.parametrize("source", list(SAMPLES))
async def test_over_the_limit_every_vendor_answers_429_in_its_shape_with_retry_after(
    source: str, start_receiver, directory, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await start_receiver(directory, rate_limits={source: HOURLY}, rate_limit_bursts={source: 2})
    case = SAMPLES[source]
    replies = [await _post(client, case) for _ in range(5)]
    assert [r.status for r in replies] == [case.status] * 2 + [429] * 3
    for reply in replies[2:]:
        assert json.loads(await reply.read()) == EXPECTED_429[source]
        # The bucket is empty and refills one token an hour: about an hour, in whole seconds.
        assert 3500 < int(reply.headers["Retry-After"]) <= 3600
    accepted = {r.headers["X-Request-Id"] for r in replies[:2]}
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=2)
    assert {dict(r.headers)["request_id"].decode() for r in records} == accepted
    assert await record_count(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic) == 2


async def test_one_tenant_over_its_limit_leaves_other_tenants_and_sources_alone(
    start_receiver, directory, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    # shop-a's tenant-file override; shop-b has none, and DFINERY is unlimited by default.
    limited = _with(directory, "shop-a", rate_limits={"dfinery": HOURLY}, rate_limit_bursts={"dfinery": 3})
    client = await start_receiver(limited)
    dfinery, topsort = SAMPLES["dfinery"], SAMPLES["topsort"]
    shop_a = [(await _post(client, dfinery)).status for _ in range(8)]
    assert shop_a == [200] * 3 + [429] * 5
    shop_b = [
        (await _post(client, dfinery, headers={"Authorization": f"Bearer {SHOP_B_KEY}"})).status
        for _ in range(8)
    ]
    assert shop_b == [200] * 8
    assert (await _post(client, topsort)).status == 204  # shop-a's other source
    # Authentication comes first: a bad key is refused as one (DFINERY: 400 with 4001), not as shop-a.
    bad = await _post(client, dfinery, headers={"Authorization": "Bearer ep_wrong_key"})
    assert (bad.status, (await bad.json())["result_code"]) == (400, 4001)
    # The limit comes before the body is read: an oversized body is refused as rate limited, not 413.
    huge = await _post(client, dfinery, data=b"x" * (kafka_settings.max_body_bytes + 1))
    assert huge.status == 429

    metrics = (await (await client.get("/metrics")).read()).decode()
    assert 'eventpipe_receiver_rejections_total{reason="rate_limited",source="dfinery"} 6.0' in metrics
    assert "shop-a" not in metrics  # no tenant label
    assert await record_count(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic) == 3 + 8 + 1
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=12)
    tenants_and_sources = sorted((dict(r.headers)["tenant"], dict(r.headers)["source"]) for r in records)
    assert tenants_and_sources == sorted(
        [(b"shop-a", b"dfinery")] * 3 + [(b"shop-b", b"dfinery")] * 8 + [(b"shop-a", b"topsort")]
    )


async def test_retailrocket_counts_per_site(start_receiver, directory) -> None:  # type: ignore[no-untyped-def]
    # "50 requests/second per site": each partnerId of a tenant has its own budget.
    second_site = "0123456789abcdef01234567"
    two_sites = _with(directory, "shop-a", retailrocket_partner_ids=frozenset({PARTNER_ID, second_site}))
    client = await start_receiver(
        two_sites, rate_limits={"retailrocket": HOURLY}, rate_limit_bursts={"retailrocket": 2}
    )
    view = SAMPLES["retailrocket"]
    first = [(await _post(client, view)).status for _ in range(3)]
    second = [(await _post(client, view, query={"partnerId": second_site})).status for _ in range(3)]
    assert first == second == [200, 200, 429]


class StoppedClock:
    """Wall time as usual; the limiter's monotonic clock stands still, so no token comes back."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return self._monotonic


async def test_retailrocket_default_is_50_per_second_per_site(start_receiver, directory) -> None:  # type: ignore[no-untyped-def]
    client = await start_receiver(directory, clock=StoppedClock())
    view = SAMPLES["retailrocket"]
    replies = [await _post(client, view) for _ in range(52)]
    assert [r.status for r in replies] == [200] * 50 + [429] * 2
    assert replies[-1].headers["Retry-After"] == "1"  # a token every 20 ms, rounded up to a second
