"""A tenants reload inside one receiver process, against the real broker: the next request after the
reload is judged by the new file (old key refused, even one remembered as found; new key accepted), a
JWT remembered as verified under a removed secret is refused, a bad file changes nothing, and each outcome is logged (counts and
reasons, never keys) and counted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from pipeline.metrics import Metrics
from pipeline.settings import Settings
from pipeline.tenants import key_digest, mint_jwt, parse
from producers.receiver.app import STATE, create_app
from producers.receiver.reloading import Reloader
from producers.receiver.tenants_reload import Outcome, ReloadRefused, ServedTenants
from tests.corpus import API_KEY, PARTNER_ID, sample_per_vendor
from tests.receiver.conftest import wait_until_ready

pytestmark = pytest.mark.kafka

Client = TestClient[web.Request, web.Application]
NEW_KEY = "ep_rotated_key_0002"
OLD_SECRET = "old-jwt-secret-of-shop-a-0123456789abcdef"
NEW_SECRET = "new-jwt-secret-of-shop-a-0123456789abcdef"
SAMPLES = sample_per_vendor()


def tenants_file(key: str, secret: str) -> bytes:
    return (
        f'[[tenants]]\nid = "shop-a"\napi_keys = ["{key_digest(key)}"]\n'
        f'retailrocket_partner_ids = ["{PARTNER_ID}"]\njwt_secrets = ["{secret}"]\n'
    ).encode()


class Pending:
    """Reload requests handed over by the test, as the parent's copies are to a worker."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, bytes | ReloadRefused]] = []
        self.outcomes: list[Outcome] = []

    def after(self, seq: int) -> Iterable[tuple[int, bytes | ReloadRefused]]:
        return [(s, content) for s, content in self.requests if s > seq]

    def settled(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class Receiver:
    def __init__(self, client: Client, reloader: Reloader, pending: Pending) -> None:
        self.client = client
        self.reloader = reloader
        self.pending = pending

    def reload(self, content: bytes) -> list[dict[str, Any]]:
        self.pending.requests.append((len(self.pending.requests) + 1, content))
        with capture_logs() as logs:
            self.reloader.reload()
        return logs

    async def dfinery(self, key: str) -> int:
        case = SAMPLES["dfinery"]
        headers = {**case.headers, "Authorization": f"Bearer {key}"}
        async with self.client.post(case.path, headers=headers, data=case.body) as resp:
            # DFINERY answers a bad token with 400 and result_code 4001, as its document says.
            return resp.status if resp.status != 400 else int((await resp.json())["result_code"])

    async def impression(self, token: str) -> int:
        case = SAMPLES["impression"]
        headers = {**case.headers, "Authorization": f"Bearer {token}"}
        async with self.client.post(case.path, params=case.query, headers=headers, data=case.body) as resp:
            return resp.status

    async def metrics(self) -> str:
        async with self.client.get("/metrics") as resp:
            return await resp.text()


@pytest.fixture
async def receiver(aiohttp_client: Callable[..., Awaitable[Client]], kafka_settings: Settings) -> Receiver:
    directory = parse(tenants_file(API_KEY, OLD_SECRET).decode(), {})
    app = create_app(kafka_settings, directory, Metrics(CollectorRegistry()))
    pending = Pending()
    reloader = Reloader(app[STATE], ServedTenants(kafka_settings, {}, directory), pending)
    client = await aiohttp_client(app)
    await wait_until_ready(client)
    return Receiver(client, reloader, pending)


async def test_the_next_request_after_a_reload_meets_the_new_key(receiver: Receiver) -> None:
    assert await receiver.dfinery(API_KEY) == 200
    assert await receiver.dfinery(NEW_KEY) == 4001
    logs = receiver.reload(tenants_file(NEW_KEY, OLD_SECRET))
    assert await receiver.dfinery(NEW_KEY) == 200
    assert await receiver.dfinery(API_KEY) == 4001

    (line,) = logs
    assert {k: v for k, v in line.items() if k != "pid"} == {
        "event": "tenants_reloaded",
        "log_level": "info",
        "generation": 1,
        "tenants": 1,
        "api_keys": 1,
        "jwt_secrets": 1,
    }
    assert [o.generation for o in receiver.pending.outcomes] == [1]
    metrics = await receiver.metrics()
    assert 'eventpipe_receiver_tenants_reloads_total{outcome="reloaded"} 1.0' in metrics
    assert "eventpipe_receiver_tenants_generation 1.0" in metrics


async def test_a_key_remembered_as_found_is_refused_after_the_reload_removes_it(receiver: Receiver) -> None:
    assert await receiver.dfinery(API_KEY) == 200
    assert await receiver.dfinery(API_KEY) == 200  # now answered from the verifier's memory
    assert len(receiver.client.app[STATE].keys) == 1
    receiver.reload(tenants_file(NEW_KEY, OLD_SECRET))
    assert len(receiver.client.app[STATE].keys) == 0
    assert await receiver.dfinery(API_KEY) == 4001
    assert await receiver.dfinery(NEW_KEY) == 200


async def test_a_token_verified_under_a_removed_secret_is_refused_after_the_reload(
    receiver: Receiver,
) -> None:
    old_token = mint_jwt("shop-a", OLD_SECRET)
    assert await receiver.impression(old_token) == 200
    assert await receiver.impression(old_token) == 200  # now answered from the verifier's memory
    assert len(receiver.client.app[STATE].jwt) == 1
    receiver.reload(tenants_file(API_KEY, NEW_SECRET))
    assert await receiver.impression(old_token) == 401
    assert await receiver.impression(mint_jwt("shop-a", NEW_SECRET)) == 200


async def test_a_bad_file_is_refused_and_the_served_keys_keep_working(receiver: Receiver) -> None:
    logs = receiver.reload(tenants_file(NEW_KEY, NEW_SECRET) + b"x = [\n")
    assert await receiver.dfinery(API_KEY) == 200
    assert await receiver.dfinery(NEW_KEY) == 4001
    assert await receiver.impression(mint_jwt("shop-a", OLD_SECRET)) == 200

    (line,) = logs
    assert line["event"] == "tenants_reload_refused"
    assert line["log_level"] == "warning"
    assert (line["request"], line["generation"]) == (1, 0)
    assert line["reason"].startswith("tenants file is not TOML: ")
    assert NEW_KEY not in str(logs) and NEW_SECRET not in str(logs)
    metrics = await receiver.metrics()
    assert 'eventpipe_receiver_tenants_reloads_total{outcome="refused"} 1.0' in metrics
    assert "eventpipe_receiver_tenants_generation 0.0" in metrics

    # The next good file is taken: a refusal does not wedge later reloads.
    receiver.reload(tenants_file(NEW_KEY, NEW_SECRET))
    assert await receiver.dfinery(NEW_KEY) == 200
    assert [o.reloaded for o in receiver.pending.outcomes] == [False, True]
