"""Key rotation as an operator does it, with `eventpipe receiver` processes and `eventpipe tenants
reload` as separate processes on the real broker: under steady traffic the new key is added, clients
move to it, the old key is removed, and not one request fails; bad files are refused by every worker
while the served keys keep working."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.tenants import key_digest
from producers.receiver import pidfile
from tests.cli_process import Finished, eventpipe
from tests.corpus import OTHER_PARTNER_ID, PARTNER_ID, sample_per_vendor
from tests.integration.test_receiver_workers import _requests_by_worker
from tests.kafka_util import create_topics, unique_settings
from tests.ports import free_port
from tests.processes import receiver_environment, spawn_receiver
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

OLD_KEY, NEW_KEY = "ep_rotation_old_0001", "ep_rotation_new_0002"
DFINERY = sample_per_vendor()["dfinery"]
RATE_PER_SENDER = 50  # requests/s from each of the two senders of the steady traffic
PROBES = 20


def tenants_file(*keys: str, partners: tuple[str, ...] = (PARTNER_ID,), extra: str = "") -> bytes:
    digests = ", ".join(f'"{key_digest(k)}"' for k in keys)
    partner_ids = ", ".join(f'"{p}"' for p in partners)
    return (
        f'[[tenants]]\nid = "shop-a"\napi_keys = [{digests}]\nretailrocket_partner_ids = [{partner_ids}]\n'
        f"{extra}"
    ).encode()


@dataclass
class Receiver:
    proc: asyncio.subprocess.Process
    output: Path
    url: str
    env: dict[str, str]
    record: Path
    metrics_dir: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = (json.loads(line) for line in self.log().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("event") == name]

    async def reload(self) -> Finished:
        async with asyncio.timeout(60):
            return await eventpipe("tenants", "reload", env=self.env)


@asynccontextmanager
async def running_receiver(
    kafka_bootstrap: str, tmp_path: Path, tenants: Path, workers: int
) -> AsyncIterator[Receiver]:
    settings = unique_settings(kafka_bootstrap)
    await create_topics(settings)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    # What the reload command needs to find this receiver: its data directory and port.
    cli_env = {"EVENTPIPE_DATA_DIR": str(tmp_path), "EVENTPIPE_HTTP_PORT": str(port)}
    env = receiver_environment(settings, tenants, port, tmp_path, metrics_dir)
    output = tmp_path / "receiver.out"
    proc = await spawn_receiver(workers, env, output)
    record = pidfile.path_for(tmp_path, port)
    receiver = Receiver(proc, output, f"http://127.0.0.1:{port}", cli_env, record, metrics_dir)
    try:

        def up() -> bool:
            assert proc.returncode is None, receiver.log()
            text = receiver.log()
            listening = text.count('"receiver_listening"') == workers
            return listening and text.count('"kafka_connected"') >= workers and record.exists()

        await wait_for(up, 90, receiver.log)
        yield receiver
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, receiver.log()
    assert not record.exists()  # the receiver's record goes with it


async def post(session: aiohttp.ClientSession, url: str, key: str) -> int:
    """DFINERY's status, or its result_code for a refused token (400 with 4001)."""
    headers = {**DFINERY.headers, "Authorization": f"Bearer {key}"}
    async with session.post(url + DFINERY.path, headers=headers, data=DFINERY.body) as resp:
        return resp.status if resp.status != 400 else int((await resp.json())["result_code"])


@dataclass
class SteadyTraffic:
    """Two senders at a fixed pace, each request on a new connection (so the kernel spreads them over
    the workers), with the key clients currently use."""

    session: aiohttp.ClientSession
    url: str
    key: str
    sent: list[tuple[float, str, int]] = field(default_factory=list)  # (monotonic time, key, status)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _sender(self) -> None:
        interval = 1 / RATE_PER_SENDER
        due = time.monotonic()
        while not self.stopping.is_set():
            key = self.key
            status = await post(self.session, self.url, key)
            self.sent.append((time.monotonic(), key, status))
            # Open-loop pacing: the next request leaves on its tick, whatever this one took, unless the
            # traffic is stopped before then.
            due += interval
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, due - time.monotonic()))

    async def run(self) -> None:
        await asyncio.gather(self._sender(), self._sender())

    def count(self, key: str, since: float = 0.0) -> int:
        return sum(1 for at, k, _ in self.sent if k == key and at >= since)


async def first_accepted(session: aiohttp.ClientSession, url: str, key: str) -> float:
    """The wall-clock time (as the receiver's log stamps) at which a request with `key` was first
    accepted, polling every 50 ms."""
    accepted: list[float] = []

    async def try_once() -> bool:
        if await post(session, url, key) == 200:
            accepted.append(time.time())
        return bool(accepted)

    await wait_for(try_once, 30, f"a request with the new key accepted at {url}")
    return accepted[0]


async def test_a_key_rotates_under_steady_traffic_without_a_failed_request(
    kafka_bootstrap: str, tmp_path: Path, figures: list[str]
) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_bytes(tenants_file(OLD_KEY))
    fresh = aiohttp.TCPConnector(force_close=True)
    async with (
        running_receiver(kafka_bootstrap, tmp_path, tenants, workers=2) as receiver,
        aiohttp.ClientSession(connector=fresh) as session,
    ):
        url = receiver.url
        traffic = SteadyTraffic(session, url, OLD_KEY)
        sending = asyncio.create_task(traffic.run())
        await wait_for(lambda: traffic.count(OLD_KEY) >= 20, 30, "steady traffic with the old key")
        assert await post(session, url, NEW_KEY) == 4001

        # 1. The new key beside the old one: accepted as soon as the reload is through.
        tenants.write_bytes(tenants_file(OLD_KEY, NEW_KEY))
        began = time.monotonic()
        new_key_accepted = asyncio.create_task(first_accepted(session, url, NEW_KEY))
        added = await receiver.reload()
        added_at = time.monotonic()
        assert added.returncode == 0, added.stderr
        assert "tenants reloaded: generation 1 of" in added.stdout
        assert "(1 tenant, 2 API keys, 0 JWT secrets); served by all 2 workers" in added.stdout
        accepted_at = await asyncio.wait_for(new_key_accepted, 30)
        assert [await post(session, url, NEW_KEY) for _ in range(PROBES)] == [200] * PROBES

        # 2. Clients move to the new key; then the old one is removed and refused by every worker.
        traffic.key = NEW_KEY
        moved = time.monotonic()
        await wait_for(lambda: traffic.count(NEW_KEY, moved) >= 20, 30, "steady traffic with the new key")
        tenants.write_bytes(tenants_file(NEW_KEY))
        removing = time.monotonic()
        removed = await receiver.reload()
        removed_at = time.monotonic()
        assert removed.returncode == 0, removed.stderr
        assert "generation 2" in removed.stdout and "(1 tenant, 1 API key, 0 JWT secrets)" in removed.stdout
        assert [await post(session, url, OLD_KEY) for _ in range(PROBES)] == [4001] * PROBES
        await wait_for(lambda: traffic.count(NEW_KEY, removed_at) >= 20, 30, "traffic after the removal")
        traffic.stopping.set()
        await sending
        ended = time.monotonic()
        served = _requests_by_worker(receiver.metrics_dir)
        log = receiver.log()
        requested = stamp(receiver.events("tenants_reload_requested")[0])
        workers_done = max(stamp(e) for e in receiver.events("tenants_reloaded") if e["generation"] == 1)

    statuses = Counter(status for _, _, status in traffic.sent)
    assert statuses == {200: len(traffic.sent)}, statuses
    during = [s for at, _, s in traffic.sent if began <= at <= ended]
    assert len(during) >= 60
    assert len(served) == 2 and all(n > 0 for n in served.values()), served  # both workers answered
    assert log.count('"tenants_reloaded"') == 4  # two reloads, two workers each
    assert OLD_KEY not in log and NEW_KEY not in log
    by_key = Counter(k for _, k, _ in traffic.sent)
    assert requested <= workers_done and requested <= accepted_at
    figures.append(
        f"key rotation (2 workers, {2 * RATE_PER_SENDER} requests/s): {len(during)} requests sent from the "
        f"first reload to the end, {len(traffic.sent)} in all ({by_key[OLD_KEY]} with the old key, "
        f"{by_key[NEW_KEY]} with the new one), statuses {dict(statuses)}; the parent took the signal, both "
        f"workers served the new file {1000 * (workers_done - requested):.0f} ms later, and the first "
        f"request with the new key was accepted {1000 * (accepted_at - requested):.0f} ms after the signal "
        f"(probed every 50 ms); `eventpipe tenants reload` took {added_at - began:.2f} s, Python start-up "
        f"included ({added.stdout.strip().rpartition('; ')[2]}); removing the old key took "
        f"{removed_at - removing:.2f} s ({removed.stdout.strip().rpartition('; ')[2]}), after which "
        "every worker refused it"
    )


def stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


BAD_FILES = [
    pytest.param(tenants_file(OLD_KEY, NEW_KEY) + b"x = [\n", "tenants file is not TOML", id="toml-error"),
    pytest.param(
        tenants_file(OLD_KEY, NEW_KEY) + b'id = "again"\n', "tenants file is not TOML", id="duplicated-key"
    ),
    pytest.param(
        tenants_file(
            OLD_KEY, NEW_KEY, extra=f'[[tenants]]\nid = "shop-b"\napi_keys = ["{key_digest(NEW_KEY)}"]\n'
        ),
        "an API key is shared by shop-a and shop-b",
        id="api-key-of-two-tenants",
    ),
    pytest.param(
        tenants_file(OLD_KEY, NEW_KEY, partners=(PARTNER_ID, OTHER_PARTNER_ID)),
        "rate limits would change (new buckets for shop-a)",
        id="rate-limited-site-added",
    ),
]


@pytest.mark.parametrize("workers", [1, 2])
async def test_bad_files_are_refused_and_the_old_keys_keep_working(
    kafka_bootstrap: str, tmp_path: Path, workers: int
) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_bytes(tenants_file(OLD_KEY))
    fresh = aiohttp.TCPConnector(force_close=True)
    async with (
        running_receiver(kafka_bootstrap, tmp_path, tenants, workers) as receiver,
        aiohttp.ClientSession(connector=fresh) as session,
    ):
        for case in BAD_FILES:
            content, reason = case.values
            assert isinstance(content, bytes) and isinstance(reason, str)
            tenants.write_bytes(content)
            out = await receiver.reload()
            assert out.returncode == 1, (case.id, out.stdout, out.stderr)
            assert f"error: tenants reload refused: {reason}" in out.stderr, case.id
            assert (
                "the receiver keeps serving generation 0 (1 tenant, 1 API key, 0 JWT secrets)" in out.stderr
            )
            assert [await post(session, receiver.url, OLD_KEY) for _ in range(PROBES)] == [200] * PROBES
            assert await post(session, receiver.url, NEW_KEY) == 4001

        def refusals_logged() -> bool:
            return receiver.log().count('"tenants_reload_refused"') == len(BAD_FILES) * workers

        await wait_for(refusals_logged, 10, receiver.log)
        async with session.get(receiver.url + "/metrics") as resp:
            metrics = await resp.text()
        refused = (
            f'eventpipe_receiver_tenants_reloads_total{{outcome="refused"}} {len(BAD_FILES) * workers}.0'
        )
        assert refused in metrics

        # A good file after the bad ones is taken, with the generation of its request.
        tenants.write_bytes(tenants_file(NEW_KEY))
        out = await receiver.reload()
        assert out.returncode == 0, out.stderr
        assert f"generation {len(BAD_FILES) + 1}" in out.stdout
        assert await post(session, receiver.url, NEW_KEY) == 200
        assert await post(session, receiver.url, OLD_KEY) == 4001
        log = receiver.log()
    assert NEW_KEY not in log and key_digest(NEW_KEY) not in log


async def test_the_reload_command_says_when_no_receiver_runs(tmp_path: Path) -> None:
    env = {"EVENTPIPE_DATA_DIR": str(tmp_path), "EVENTPIPE_HTTP_PORT": "18999"}
    out = await eventpipe("tenants", "reload", env=env)
    assert out.returncode == 1
    assert f"error: no receiver record at {tmp_path}/receiver-18999.json" in out.stderr
    # A record left by a receiver that was killed names a process that no longer runs.
    stale = pidfile.ReceiverRecord(os.getpid(), 1, "127.0.0.1", 18999, False, 2, "/t.toml")
    pidfile.write(tmp_path / "receiver-18999.json", stale)
    out = await eventpipe("tenants", "reload", env=env)
    assert out.returncode == 1
    assert f"(pid {os.getpid()}) is not running any more" in out.stderr
