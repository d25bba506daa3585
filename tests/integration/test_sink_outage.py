"""The sink goes away under a running consumer (PostgreSQL stops accepting connections and drops the
existing ones): the consumer pauses, says not-ready within seconds, commits nothing past what is
stored, and catches up by itself when the database is back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.corpus import load_cases, restamp
from tests.integration.conftest import Pipeline, row_count
from tests.integration.test_pipeline import personalize
from tests.kafka_util import committed_total
from tests.waiting import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _set_connections(admin_dsn: str, database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("sink_url", ["postgresql"], indirect=True)
async def test_consumer_pauses_and_catches_up(pipeline: Pipeline, postgres_dsn: str) -> None:
    worker = await pipeline.start_consumer(sink_retry_max_seconds=1.0)
    sink = pipeline.settings.sink
    database = sink.rsplit("/", 1)[-1]
    click = next(c for c in load_cases() if c.id == "topsort-spec-click")
    now = datetime.now(UTC)

    async def send(n: int, prefix: str) -> None:
        for i in range(n):
            case = personalize(restamp(click, now - timedelta(seconds=i)), f"{prefix}{i}")
            assert (await pipeline.post(case)).status == 204

    await send(20, "before")
    await wait_for(lambda: _rows_are(sink, 20), what="the first 20 rows")
    await wait_for(lambda: _ready(worker, True), what="readiness")

    await _set_connections(postgres_dsn, database, allowed=False)
    try:
        await send(30, "during")
        await wait_for(lambda: _ready(worker, False), seconds=10, what="not-ready while the sink is down")
        # nothing past what is stored is committed: 20 records stored, 20 committed at most
        assert await committed_total(pipeline.settings) <= 20
    finally:
        await _set_connections(postgres_dsn, database, allowed=True)
    await wait_for(lambda: _rows_are(sink, 50), seconds=60, what="catch-up to 50 rows")
    await wait_for(lambda: _ready(worker, True), what="ready again")
    await wait_for(lambda: _committed_is(pipeline, 50), what="offsets committed after catch-up")
    assert pipeline.metrics[0].sink_errors.labels("postgresql")._value.get() > 0


async def _rows_are(sink: str, n: int) -> bool:
    return await row_count(sink) == n


async def _ready(worker, expected: bool) -> bool:  # type: ignore[no-untyped-def]
    return bool(worker.readiness().ready) is expected


async def _committed_is(pipeline: Pipeline, n: int) -> bool:
    return await committed_total(pipeline.settings) == n
