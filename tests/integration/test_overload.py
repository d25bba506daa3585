"""`eventpipe receiver --workers 2` with a bound of one body in flight per worker, against the real
broker: of requests that arrive together and hold their bodies back, each worker admits one and refuses
the rest at once with the vendor's 503; every admitted one is written to Kafka, and the workers' metrics
count the refusals and come back to no bytes in flight."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from pipeline.tenants import key_digest
from tests.corpus import API_KEY, load_cases
from tests.kafka_util import create_topics, record_count, unique_settings
from tests.ports import free_port
from tests.processes import receiver_environment, spawn_receiver, workers_up
from tests.receiver.http_raw import head, padded, reply
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

CLICK = next(c for c in load_cases() if c.id == "topsort-spec-click")
LIMIT = 64 * 1024
SIZE = 60_000
CONNECTIONS = 8


def _sum(metrics: str, pattern: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{pattern} (\S+)$", metrics, re.M))


async def test_each_worker_admits_its_bound_and_refuses_the_rest_unread(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = unique_settings(kafka_bootstrap)
    await create_topics(settings)
    tenants_file = tmp_path / "tenants.toml"
    tenants_file.write_text(f'[[tenants]]\nid = "shop-a"\napi_keys = ["{key_digest(API_KEY)}"]\n')
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {
        **receiver_environment(settings, tenants_file, port, tmp_path, metrics_dir),
        "EVENTPIPE_MAX_BODY_BYTES": str(LIMIT),
        "EVENTPIPE_MAX_IN_FLIGHT_BYTES": str(LIMIT),
        "EVENTPIPE_RATE_LIMITS": "topsort=0",
    }
    out = tmp_path / "receiver.out"
    proc = await spawn_receiver(2, env, out)
    writers: list[asyncio.StreamWriter] = []
    try:
        await workers_up(proc, out, 2)
        body = padded(CLICK, SIZE)
        conns = []
        for _ in range(CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(head(CLICK, SIZE) + body[:1000])  # the rest of each body is held back
            await writer.drain()
            conns.append((reader, writer))
        # The refused answer at once; the admitted wait for their bodies.
        replies = [asyncio.create_task(reply(reader)) for reader, _ in conns]
        await asyncio.wait(replies, timeout=3)
        refused = [t.result() for t in replies if t.done()]
        admitted = [(conns[i], t) for i, t in enumerate(replies) if not t.done()]
        assert 1 <= len(admitted) <= 2, out.read_text()  # one per worker at most
        assert len(refused) == CONNECTIONS - len(admitted)
        for status, headers, raw in refused:
            assert status == 503
            assert headers["retry-after"] == "1"
            assert json.loads(raw)["errCode"] == "service_unavailable"
        for (_, writer), task in admitted:
            writer.write(body[1000:])
            await writer.drain()
            status, _, _ = await asyncio.wait_for(task, 20)
            assert status == 204
        assert await record_count(kafka_bootstrap, settings.raw_topic) == len(admitted)

        async def scrape() -> str:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as resp,
            ):
                return await resp.text()

        metrics = await scrape()
        overloaded = r'eventpipe_receiver_rejections_total\{reason="overloaded",source="topsort"\}'
        assert _sum(metrics, overloaded) == len(refused)
        for writer in writers:
            writer.close()

        async def no_bytes_in_flight() -> bool:
            return _sum(await scrape(), "eventpipe_receiver_in_flight_bytes") == 0

        # Each worker writes its gauge in the tick after its last request ends.
        await wait_for(no_bytes_in_flight, 5, "the workers' in-flight bytes back to 0")
    finally:
        for writer in writers:
            writer.close()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, out.read_text()
