"""Receiver tests: the aiohttp app in-process (aiohttp_client) with its real Kafka producer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from pipeline import tenants
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from producers.receiver.app import STATE, create_app
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret
from tests.kafka_util import create_topics, unique_settings
from tests.waiting import wait_for


@pytest.fixture(scope="session")
def directory() -> tenants.TenantDirectory:
    env = dict(os.environ)
    env[JWT_SECRET_ENV] = jwt_secret()
    return tenants.load(str(CORPUS / "tenants.toml"), env)


ClientFactory = Callable[[Settings], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def receiver_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    directory: tenants.TenantDirectory,
) -> AsyncIterator[ClientFactory]:
    async def make(settings: Settings, wait_ready: bool = True) -> TestClient[web.Request, web.Application]:
        app = create_app(
            settings, directory, Metrics(CollectorRegistry(), tenant_labels=settings.tenant_labels)
        )
        client = await aiohttp_client(app)
        if wait_ready:
            await wait_until_ready(client)
        return client

    return make


async def wait_until_ready(client: TestClient[web.Request, web.Application], seconds: float = 20.0) -> None:
    await wait_for(
        lambda: client.app[STATE].producer.ready, seconds, "the receiver's Kafka producer to connect"
    )


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str) -> Settings:
    settings = unique_settings(kafka_bootstrap)
    await create_topics(settings)
    return settings
