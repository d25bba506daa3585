"""A private Kafka broker killed (SIGKILL) and, separately, stopped (SIGTERM) under a steady stream of
requests, then restarted: while it is down the receiver answers 503, never 2xx; it recovers by
itself; and every request answered 2xx is on the topic afterwards (the ledger)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import Counter
from pathlib import Path

import pytest

from pipeline import kafka_local, topics
from pipeline.settings import Settings
from tests.corpus import load_cases
from tests.kafka_util import read_all, unique_settings
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.network]

CLICK = next(c for c in load_cases() if c.id == "topsort-spec-click")


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair")


@pytest.fixture
async def private_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port_pair()
    settings = unique_settings(
        f"127.0.0.1:{port}", data_dir=str(tmp_path), kafka_heap="384m", produce_timeout_seconds=2.0
    )
    await asyncio.to_thread(kafka_local.start, settings)
    await topics.ensure(settings)
    yield settings
    await asyncio.to_thread(_stop_quietly, settings)


def _stop_quietly(settings: Settings) -> None:
    try:
        kafka_local.stop(settings)
    except kafka_local.KafkaLocalError:
        pid = kafka_local.read_pid(kafka_local.Layout.from_settings(settings))
        if pid:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_receiver_never_acknowledges_while_kafka_is_down(
    how: str, private_broker: Settings, receiver_factory
) -> None:  # type: ignore[no-untyped-def]
    settings = private_broker
    client = await receiver_factory(settings)
    ledger: list[str] = []  # request ids answered 2xx
    statuses: Counter[int] = Counter()
    down = asyncio.Event()
    restarting = asyncio.Event()  # the outage window closes when the restart begins
    back = asyncio.Event()
    during_outage: Counter[int] = Counter()  # replies to requests sent after the broker died
    after_restart = 0

    async def stream() -> None:
        nonlocal after_restart
        while after_restart < 20:
            sent_while_down = down.is_set() and not restarting.is_set()
            resp = await client.post(CLICK.path, headers=CLICK.headers, data=CLICK.body)
            statuses[resp.status] += 1
            if sent_while_down and not restarting.is_set():
                during_outage[resp.status] += 1
            if 200 <= resp.status < 300:
                ledger.append(resp.headers["X-Request-Id"])
                if back.is_set():
                    after_restart += 1
            await asyncio.sleep(0.01)  # pacing: a steady stream, not a flood of refusals

    task = asyncio.create_task(stream())
    await wait_for(lambda: len(ledger) >= 20, 60, lambda: f"20 acknowledged requests; {statuses}")
    layout = kafka_local.Layout.from_settings(settings)
    pid = kafka_local.read_pid(layout)
    assert pid is not None
    if how == "SIGKILL":
        os.kill(pid, signal.SIGKILL)

        def reaped() -> bool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # WNOHANG never blocks
            return kafka_local.read_pid(layout) is None

        await wait_for(reaped, 30, "the killed broker to be gone")
        layout.pid_file.unlink(missing_ok=True)
    else:
        await asyncio.to_thread(kafka_local.stop, settings)
    down.set()
    acknowledged_before_outage = len(ledger)
    await wait_for(
        lambda: during_outage[503] >= 3, 60, lambda: f"three 503s during the outage; {during_outage}"
    )
    restarting.set()
    await asyncio.to_thread(kafka_local.start, settings)
    back.set()
    # the receiver recovers by itself: 20 more 2xx without being restarted
    await asyncio.wait_for(task, 120)

    assert not any(200 <= status < 300 for status in during_outage), during_outage
    records = await read_all(
        settings.kafka_bootstrap, settings.raw_topic, expected=len(ledger), deadline_s=30
    )
    on_topic = {dict(r.headers)["request_id"].decode() for r in records}
    lost = [rid for rid in ledger if rid not in on_topic]
    phantoms = len(on_topic - set(ledger))
    print(
        f"\nledger[{how}]: acknowledged={len(ledger)} (before outage {acknowledged_before_outage}) "
        f"on_topic={len(on_topic)} lost={len(lost)} phantom={phantoms} statuses={dict(statuses)} "
        f"during_outage={dict(during_outage)}"
    )
    assert lost == []
    assert during_outage[503] >= 3
