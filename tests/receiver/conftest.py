"""Receiver tests: the aiohttp app in-process (aiohttp_client) with its real Kafka producer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline import tenants
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from producers.receiver.app import STATE, create_app
from producers.receiver.body import SERVER_OPTIONS
from producers.receiver.direct_routes import route_directly
from producers.receiver.valve import forget_lost
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret
from tests.kafka_util import create_topics, unique_settings
from tests.waiting import wait_for


@pytest.fixture(scope="session")
def directory() -> tenants.TenantDirectory:
    env = dict(os.environ)
    env[JWT_SECRET_ENV] = jwt_secret()
    return tenants.load(str(CORPUS / "tenants.toml"), env)


ClientFactory = Callable[[Settings], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


async def serve(
    app: web.Application,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    """A client of the app served as `eventpipe receiver` serves it (SERVER_OPTIONS; aiohttp_client's
    own server_kwargs never reach the server), its vendor routes taken directly as there (not its
    acceptor: aiohttp's server accepts, so the valve holds connections only once answered)."""
    server = await aiohttp_server(app, **SERVER_OPTIONS)
    assert server.runner is not None and server.runner.server is not None
    route_directly(server.runner.server, app)
    forget_lost(server.runner.server, app[STATE].gate.valve)
    return await aiohttp_client(server)


@pytest.fixture
async def receiver_factory(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    directory: tenants.TenantDirectory,
) -> AsyncIterator[ClientFactory]:
    async def make(settings: Settings, wait_ready: bool = True) -> Client:
        app = create_app(
            settings, directory, Metrics(CollectorRegistry(), tenant_labels=settings.tenant_labels)
        )
        client = await serve(app, aiohttp_server, aiohttp_client)
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
