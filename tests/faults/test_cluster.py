"""Faults on a three-node cluster (topics with replication 3, min.insync.replicas 2, acks=all) under a
steady stream: one node killed then restarted; a rolling restart; one node hung (SIGSTOP) for 30 s;
two nodes down, where acks=all cannot be met and the answer must be 503, never 2xx. Per fault: lost,
duplicated and phantom against the sink; the share of 2xx while the fault lasted; the longest time
without a new stored row; the time from the repair until every partition is fully replicated.

The receiver writes in Kafka transactions (EVENTPIPE_KAFKA_TRANSACTIONAL_ID), so a refused request
has no excuse to be stored: none may be. Only a request the client gave up on without any answer may
be (the rig's "ambiguous"). The hung node and two nodes down are also run without transactions, where
a 503 given on the produce timeout may be stored when the nodes return (docs/SCALING.md, "Phantoms")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.ledger import Outcome, Window
from tests.faults.rig import Rig, assert_no_loss
from tests.faults.services import PrivateCluster
from tests.processes import environment
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.network]

HUNG_SECONDS = 30.0
# The production default, above the cluster's failover time (a node fenced after
# broker.session.timeout.ms, 3 s here): a lost node shows as latency, not as 503.
PRODUCE_TIMEOUT = 5.0
# The goal while one node is lost. The receiver's probe asks every broker and the writes of
# keyless records avoid the partitions whose leader does not answer (producers/receiver/batching.py):
# only the requests whose records were already with the lost node wait out a leader change or a timeout.
ANSWERED_2XX_GOAL = 0.98


def eventpipe(cluster: PrivateCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`eventpipe kafka ...` on the cluster's ports and data dir, as an operator runs it."""
    env = {**os.environ, **environment(cluster.settings)}
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", "kafka", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def nodes(cluster: PrivateCluster) -> list[dict[str, Any]]:
    status = eventpipe(cluster, "status", "--json")
    found: list[dict[str, Any]] = json.loads(status.stdout)["nodes"]
    assert status.returncode == (0 if all(n["running"] for n in found) else 1), status.stderr
    return found


@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """Started and stopped with `eventpipe kafka start --nodes 3` / `stop`, checking what they say."""
    cluster = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    try:
        started = eventpipe(cluster, "start", "--nodes", "3")
        assert started.returncode == 0, started.stderr
        assert "started nodes 1, 2, 3 in" in started.stdout and cluster.bootstrap in started.stdout
        assert [(n["node_id"], n["bootstrap"], n["running"]) for n in nodes(cluster)] == [
            (n, address, True) for n, address in enumerate(cluster.bootstrap.split(","), start=1)
        ]
        yield cluster
    finally:
        stopped = eventpipe(cluster, "stop")
        cluster.close()  # whatever `stop` left: a failed assertion must not leave nodes running
    assert stopped.returncode == 0 and "Kafka stopped (node 1 pid" in stopped.stdout, stopped.stderr
    assert [(n["pid"], n["running"]) for n in nodes(cluster)] == [(None, False)] * 3


@pytest.fixture
async def cluster(_module_cluster: PrivateCluster) -> PrivateCluster:
    """The cluster with every node up (again, if an earlier test left one down)."""
    await asyncio.to_thread(_module_cluster.start)
    return _module_cluster


def ambiguous(rig: Rig, window: Window) -> set[str]:
    """Requests that may be stored without a 2xx: in flight when the fault struck, or answered 503
    by the receiver's produce timeout (the broker may commit such a record later)."""
    return window.caught | rig.ledger.refused_after(PRODUCE_TIMEOUT - 0.25)


def share_2xx(window: Window) -> float:
    total = sum(window.replies.values())
    return sum(n for s, n in window.replies.items() if s.startswith("2")) / max(total, 1)


async def start_pipeline(
    make_rig: RigFactory, fault: str, cluster: PrivateCluster, tmp_path: Path, *, transactions: bool = True
) -> Rig:
    rig = await make_rig(
        fault,
        cluster.bootstrap,
        f"sqlite:///{tmp_path / 'events.db'}",
        topic_replication=3,
        # The production default, above the cluster's failover time (a node fenced after
        # broker.session.timeout.ms, 3 s here): a lost node shows as latency, not as 503.
        produce_timeout_seconds=PRODUCE_TIMEOUT,
        kafka_transactional_id=f"ledger-{uuid.uuid4().hex[:8]}" if transactions else "",
    )
    await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    return rig


async def fully_replicated(rig: Rig, cluster: PrivateCluster) -> float:
    """Wait until every partition of the run's topics has all three replicas in sync; returns when."""
    topics = [rig.settings.raw_topic, rig.settings.dlq_topic]
    await wait_for(lambda: cluster.fully_replicated(topics), 180, "every partition fully replicated")
    return time.monotonic()


async def judge_one_node_lost(
    rig: Rig,
    window: Window,
    stored_between: tuple[float, float],
    recovery_seconds: float,
    *,
    writes_may_time_out: bool = False,
    transactions: bool = True,
) -> None:
    """The goals while one node is lost: nothing lost, stored twice or stored without a 2xx, and at
    least 98 % of the requests answered 2xx. A node that hangs holds the writes already sent to it
    until the produce timeout; a dead one is fenced well within it."""
    figures = await rig.settle(
        window,
        # Without transactions a 503 on the produce timeout is ambiguous (the record may be committed).
        excused=set() if transactions else ambiguous(rig, window),
        answered_2xx=share_2xx(window),
        recovery_seconds=recovery_seconds,
        storing_gap_seconds=await rig.longest_storing_gap(*stored_between),
        longest_wait=True,
    )
    # With transactions nothing is excused: no request answered without a 2xx is stored.
    assert_no_loss(figures)
    if not writes_may_time_out:
        assert not rig.ledger.refused_after(PRODUCE_TIMEOUT - 0.25), f"a write timed out: {figures.line()}"
    assert share_2xx(window) >= ANSWERED_2XX_GOAL, figures.line()


async def test_one_node_killed_then_restarted(
    cluster: PrivateCluster, make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await start_pipeline(make_rig, "cluster: SIGKILL one node, restart", cluster, tmp_path)
    async with rig.sender():
        await rig.acknowledged(50)
        window = rig.ledger.open_window()
        began = time.monotonic()
        await asyncio.to_thread(cluster.kill, 2)
        window.fault_in_effect()
        # Down long enough for the controllers to fence it and move its leaderships (about 9 s).
        await rig.acknowledged(400)
        repaired = time.monotonic()
        # The operator's repair: `start` again starts the node that is down and no other.
        before = [n["pid"] for n in await asyncio.to_thread(nodes, cluster)]
        again = await asyncio.to_thread(eventpipe, cluster, "start", "--nodes", "3")
        assert again.returncode == 0 and "started nodes 2 in" in again.stdout, again.stdout + again.stderr
        recovered = await fully_replicated(rig, cluster)
        rig.ledger.close_window()
        await rig.acknowledged(30)
    after = [n["pid"] for n in await asyncio.to_thread(nodes, cluster)]
    assert before[1] is None and after[1] is not None and (after[0], after[2]) == (before[0], before[2])
    idle = await asyncio.to_thread(eventpipe, cluster, "start", "--nodes", "3")
    assert idle.returncode == 0 and "already running" in idle.stdout, idle.stderr
    # A write in flight to the node as it dies waits for its partition's new leader: on this two-core
    # box that failover took 3 to over 5 s, so it may meet the produce timeout (a 503: its transaction
    # is never committed). Lost, duplicated, phantoms and the 98 % are still checked.
    await judge_one_node_lost(rig, window, (began, recovered), recovered - repaired, writes_may_time_out=True)


async def test_rolling_restart(cluster: PrivateCluster, make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await start_pipeline(make_rig, "cluster: rolling restart", cluster, tmp_path)
    async with rig.sender():
        await rig.acknowledged(50)
        window = rig.ledger.open_window()
        began = time.monotonic()
        window.fault_in_effect()
        recovered = began
        for node in (1, 2, 3):
            # One at a time, each only once every partition is back in sync: never two replicas out.
            await asyncio.to_thread(cluster.stop, node)
            await rig.acknowledged(20)
            await asyncio.to_thread(cluster.start)
            recovered = await fully_replicated(rig, cluster)
        rig.ledger.close_window()
        await rig.acknowledged(30)
    await judge_one_node_lost(rig, window, (began, recovered), 0.0)


@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "no-transactions"])
async def test_one_node_hung_for_30_seconds(
    cluster: PrivateCluster, make_rig: RigFactory, tmp_path: Path, transactions: bool
) -> None:
    fault = "cluster: SIGSTOP one node 30 s" + ("" if transactions else ", no transactions")
    rig = await start_pipeline(make_rig, fault, cluster, tmp_path, transactions=transactions)
    async with rig.sender():
        await rig.acknowledged(50)
        window = rig.ledger.open_window()
        began = time.monotonic()
        cluster.pause(3)
        window.fault_in_effect()
        try:
            await wait_for(lambda: time.monotonic() - began >= HUNG_SECONDS, HUNG_SECONDS + 5, "30 s")
        finally:
            cluster.resume(3)
        repaired = time.monotonic()
        recovered = await fully_replicated(rig, cluster)
        rig.ledger.close_window()
        await rig.acknowledged(30)
    await judge_one_node_lost(
        rig,
        window,
        (began, repaired),
        recovered - repaired,
        writes_may_time_out=True,
        transactions=transactions,
    )


@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "no-transactions"])
async def test_two_nodes_down_answers_503_never_2xx(
    cluster: PrivateCluster, make_rig: RigFactory, tmp_path: Path, transactions: bool
) -> None:
    fault = "cluster: two nodes SIGKILL" + ("" if transactions else ", no transactions")
    rig = await start_pipeline(make_rig, fault, cluster, tmp_path, transactions=transactions)
    async with rig.sender():
        await rig.acknowledged(50)
        window = rig.ledger.open_window()
        await asyncio.to_thread(cluster.kill, 1)
        await asyncio.to_thread(cluster.kill, 2)
        window.fault_in_effect()
        await wait_for(
            lambda: window.replies["503"] >= 30, 90, lambda: f"503s; replies {dict(window.replies)}"
        )
        # The fault ends as the restart begins: from then on 2xx are due again.
        rig.ledger.close_window()
        repaired = time.monotonic()
        await asyncio.to_thread(cluster.start)
        recovered = await fully_replicated(rig, cluster)
        await rig.acknowledged(50)
    figures = await rig.settle(
        window,
        # Without transactions a 503 given on the produce timeout is ambiguous: the record may be in a
        # leader's log, committed once the nodes return.
        excused=set() if transactions else ambiguous(rig, window),
        answered_2xx=share_2xx(window),
        recovery_seconds=recovered - repaired,
    )
    assert figures.outage is not None
    assert not [s for s in figures.outage if s.startswith("2")], figures.line()
    assert rig.ledger.count(Outcome.ACKNOWLEDGED) > 100
    # With transactions nothing is excused: no request answered 503 is stored. A request whose commit
    # was under way when the nodes died waits for it until they return; a client that gives up first
    # saw no answer at all (ambiguous, as the rig counts it), and the record is stored.
    assert_no_loss(figures)
