"""End-to-end fixtures: the receiver in-process, real Kafka, consumer workers in the same loop, and a
fresh sink of each kind (SQLite file, PostgreSQL database) per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from consumers.sinks import open_sink
from consumers.worker import Worker
from pipeline import tenants
from pipeline.metrics import Metrics
from pipeline.settings import Settings
from producers.receiver.app import create_app
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret
from tests.kafka_util import create_topics, unique_settings
from tests.receiver.conftest import serve, wait_until_ready


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    admin_dsn: str = request.getfixturevalue("postgres_dsn")
    name = f"ep_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = urlparse(admin_dsn)
    yield urlunparse(url._replace(path=f"/{name}"))
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def query(sink: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows from the sink's database, read independently of the sink under test; a statement that
    changes rows is committed."""
    if sink.startswith("sqlite:///"):
        import sqlite3

        def run() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(sink.removeprefix("sqlite:///"))
            try:
                with conn:
                    return [tuple(r) for r in conn.execute(sql.replace("$", "?"), args).fetchall()]
            finally:
                conn.close()

        return await asyncio.to_thread(run)
    conn = await asyncpg.connect(sink)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def row_count(sink: str) -> int:
    try:
        return int((await query(sink, "SELECT count(*) FROM events"))[0][0])
    except Exception:  # table not created yet
        return 0


@dataclass
class Pipeline:
    settings: Settings
    client: TestClient[web.Request, web.Application]
    workers: list[tuple[Worker, asyncio.Task[None]]] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)

    async def start_consumer(self, group_id: str | None = None, **overrides: Any) -> Worker:
        settings = self.settings.replace(metrics_port=0, **overrides)
        metrics = Metrics(CollectorRegistry())
        worker = Worker(settings, metrics, open_sink(settings.sink), group_id=group_id)
        await worker.start()
        task = asyncio.create_task(worker.run())
        self.workers.append((worker, task))
        self.metrics.append(metrics)
        return worker

    async def stop_consumers(self) -> None:
        for worker, _task in self.workers:
            worker.request_stop()
        for worker, task in self.workers:
            await asyncio.wait_for(task, 30)
            await worker.close()
        self.workers.clear()

    async def post(self, case: Any) -> Any:
        return await self.client.request(
            case.method, case.path, params=case.query, headers=case.headers, data=case.body
        )


@pytest.fixture(scope="session")
def corpus_tenants() -> tenants.TenantDirectory:
    env = dict(os.environ)
    env[JWT_SECRET_ENV] = jwt_secret()
    return tenants.load(str(CORPUS / "tenants.toml"), env)


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str,
    sink_url: str,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    corpus_tenants: tenants.TenantDirectory,
) -> AsyncIterator[Pipeline]:
    settings = unique_settings(kafka_bootstrap, sink=sink_url, batch_max_wait_ms=100)
    await create_topics(settings)
    app = create_app(settings, corpus_tenants, Metrics(CollectorRegistry()))
    client = await serve(app, aiohttp_server, aiohttp_client)
    await wait_until_ready(client)
    pipe = Pipeline(settings, client)
    yield pipe
    await pipe.stop_consumers()
