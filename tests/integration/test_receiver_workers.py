"""`eventpipe receiver --workers 2` as an operator runs it: the two processes share one set of rate
limit buckets, so a tenant gets its burst once, not once per worker, however the kernel spreads its
connections."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from pipeline.tenants import key_digest
from tests.corpus import API_KEY, load_cases
from tests.kafka_util import create_topics, record_count, unique_settings
from tests.ports import free_port
from tests.processes import receiver_environment, spawn_receiver, workers_up

pytestmark = pytest.mark.kafka

BURST = 20
REQUESTS = 60
DFINERY = next(c for c in load_cases() if c.id == "dfinery-seed-purchase")


def _requests_by_worker(metrics_dir: Path) -> dict[str, float]:
    """Requests each worker answered, from its own prometheus-client multiprocess file."""
    served = {}
    for path in metrics_dir.glob("counter_*.db"):
        samples = [s for m in MultiProcessCollector.merge([str(path)]) for s in m.samples]
        served[path.stem] = sum(s.value for s in samples if s.name == "eventpipe_receiver_requests_total")
    return served


async def test_workers_share_the_tenants_rate_limit(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = unique_settings(kafka_bootstrap)
    await create_topics(settings)
    tenants_file = tmp_path / "tenants.toml"
    # A refill of one token per 100 s: the burst is all a tenant gets while the test runs.
    tenants_file.write_text(
        f'[[tenants]]\nid = "shop-a"\napi_keys = ["{key_digest(API_KEY)}"]\n'
        f"rate_limits = {{ dfinery = 0.01 }}\nrate_limit_bursts = {{ dfinery = {BURST} }}\n"
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    run_tmp = tmp_path / "tmp"
    run_tmp.mkdir()
    port = free_port()
    env = {
        **receiver_environment(settings, tenants_file, port, tmp_path, metrics_dir),
        "TMPDIR": str(run_tmp),
    }
    out = tmp_path / "receiver.out"
    proc = await spawn_receiver(2, env, out)
    try:
        await workers_up(proc, out, 2)
        base = f"http://127.0.0.1:{port}"
        statuses: list[int] = []
        # A new connection per request, so SO_REUSEPORT spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(REQUESTS):
                async with session.post(
                    base + DFINERY.path, headers=DFINERY.headers, data=DFINERY.body
                ) as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert (await resp.json())["result_code"] == 4006
                        assert int(resp.headers["Retry-After"]) >= 1
            async with session.get(base + "/metrics") as resp:
                metrics = await resp.text()

        assert sorted(statuses) == [200] * BURST + [429] * (REQUESTS - BURST), statuses
        served = _requests_by_worker(metrics_dir)
        assert len(served) == 2 and all(n > 0 for n in served.values()), served
        assert sum(served.values()) == REQUESTS
        rejected = 'eventpipe_receiver_rejections_total{reason="rate_limited",source="dfinery"} 40.0'
        assert rejected in metrics
        assert await record_count(kafka_bootstrap, settings.raw_topic) == BURST
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, out.read_text()
    assert list(run_tmp.iterdir()) == []  # the bucket table's directory is removed on exit
