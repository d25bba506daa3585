"""A local KRaft cluster of several nodes from the same jars as the single broker: each node broker and
controller, on loopback, node N on the base port + 100 * (N - 1) (9092, 9192, 9292) with its controller
one above, data under <data dir>/kafka/node-N. Starting is idempotent: only nodes that are down start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

import msgspec
from aiokafka.client import AIOKafkaClient

from pipeline import kafka_local
from pipeline.kafka_local import KafkaLocalError, Layout, Started
from pipeline.settings import Settings

PORT_STRIDE = 100
STOP_SECONDS = kafka_local.STOP_TIMEOUT_SECONDS
KILL_AFTER_SECONDS = 20.0


def node_layout(settings: Settings, node_id: int) -> Layout:
    single = Layout.from_settings(settings)
    data = single.data / f"node-{node_id}"
    return Layout(
        libs=single.libs,
        data=data,
        log_dirs=data / "data",
        config=data / "server.properties",
        pid_file=data / "kafka.pid",
        log_file=data / "kafka.log",
        host=single.host,
        port=single.port + PORT_STRIDE * (node_id - 1),
    )


def node_overrides(layout: Layout, node_id: int, nodes: int, voters: str) -> dict[str, str]:
    """What a node of an N-node cluster changes in server.properties: its id, the quorum, and
    replication that survives the loss of one node (factor 3, two in sync for acks=all)."""
    factor = str(min(3, nodes))
    in_sync = str(min(2, nodes))
    return {
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": in_sync,
        "default.replication.factor": factor,
        "min.insync.replicas": in_sync,
        # A node that stops heartbeating is fenced after 3 s (Kafka's default is 9): until then every
        # partition it leads or follows cannot take an acks=all write. Well below the receiver's
        # produce timeout (5 s), so losing a node costs latency, not 503s (docs/SCALING.md).
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # When the node lost is also the active controller, the others must first elect a new one
        # (Kafka's defaults: 2 s without a fetch, then an election of up to 1 s and a backoff of up to
        # 1 s) before its fencing can even begin: 3 s plus that outlasted the produce timeout. On one
        # host the quorum's round trips take milliseconds.
        "controller.quorum.fetch.timeout.ms": "1000",
        "controller.quorum.election.timeout.ms": "500",
        "controller.quorum.election.backoff.max.ms": "300",
    }


def bootstrap_of(settings: Settings, nodes: int) -> str:
    """EVENTPIPE_KAFKA_BOOTSTRAP for clients of the cluster: every node."""
    layouts = [node_layout(settings, n) for n in range(1, nodes + 1)]
    return ",".join(f"{lay.host}:{lay.port}" for lay in layouts)


def _cluster_id(settings: Settings, layout: Layout) -> str:
    """One id for every node, kept beside them so that a node formatted later joins the same cluster."""
    path = Layout.from_settings(settings).data / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = kafka_local.new_cluster_id(layout, settings.kafka_heap)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def start(settings: Settings, nodes: int) -> Started:
    """Start the nodes 1..`nodes` that are down and wait until every node answers a client. The
    launched nodes come up together: none can serve before a majority of controllers has formed."""
    if nodes < 2:
        raise KafkaLocalError("a cluster has 2 or more nodes; `eventpipe kafka start` runs one")
    layouts = {n: node_layout(settings, n) for n in range(1, nodes + 1)}
    voters = ",".join(f"{n}@{lay.host}:{lay.port + 1}" for n, lay in layouts.items())
    down = [n for n, lay in layouts.items() if kafka_local.read_pid(lay) is None]
    launched: dict[int, subprocess.Popen[bytes]] = {}
    began = time.monotonic()
    if down:
        kafka_local.java_version()
        kafka_local.fetch_jars(layouts[1])
        cluster_id = _cluster_id(settings, layouts[1])
        try:
            for n in down:
                lay = layouts[n]
                kafka_local.render_config(lay, node_overrides(lay, n, nodes, voters))
                kafka_local.format_storage(lay, settings.kafka_heap, cluster_id)
                launched[n] = kafka_local.launch(lay, settings.kafka_heap)
            _wait_answering(layouts, launched)
        except BaseException:
            # Ctrl-C or a failed node: leave nothing half-started behind the caller.
            for n, proc in launched.items():
                kafka_local.terminate(proc, layouts[n])
            raise
    took = time.monotonic() - began
    running = ", ".join(f"node {n} pid {kafka_local.read_pid(lay)}" for n, lay in layouts.items())
    what = f"started nodes {', '.join(map(str, launched))} in {took:.1f}s" if launched else "already running"
    message = f"Kafka cluster {what} ({running}); bootstrap {bootstrap_of(settings, nodes)}"
    return Started(message, started=bool(launched))


def _wait_answering(layouts: dict[int, Layout], launched: dict[int, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + kafka_local.START_TIMEOUT_SECONDS
    waiting = set(layouts)
    while waiting:
        for n, proc in launched.items():
            if proc.poll() is not None:
                raise KafkaLocalError(
                    f"Kafka node {n} exited with {proc.returncode} during start:\n"
                    f"{kafka_local.tail(layouts[n].log_file)}"
                )
        for n in sorted(waiting):
            if node_answers(layouts[n], n, timeout=2.0):
                waiting.discard(n)
        if waiting and time.monotonic() > deadline:
            raise KafkaLocalError(
                f"Kafka nodes {sorted(waiting)} did not accept a client within "
                f"{kafka_local.START_TIMEOUT_SECONDS:.0f}s; see {layouts[min(waiting)].log_file}"
            )
        if waiting:
            time.sleep(0.25)


async def _node_answers(bootstrap: str, node_id: int, wait_seconds: float) -> bool:
    # A client of this node alone: an admin call may be routed to another node, which may be the one
    # that is down. The node must also list itself: registered with the controllers, not fenced.
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
        return node_id in {broker.nodeId for broker in client.cluster.brokers()}
    except Exception:  # any failure means "not answering" (yet): callers poll or report it
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def node_answers(layout: Layout, node_id: int, timeout: float = 3.0) -> bool:
    with kafka_local.quiet_aiokafka():
        return asyncio.run(_node_answers(f"{layout.host}:{layout.port}", node_id, timeout))


class NodeStatus(msgspec.Struct, frozen=True):
    node_id: int
    pid: int | None
    bootstrap: str
    running: bool  # the process is alive and its listener answers a client


def known_nodes(settings: Settings) -> dict[int, Layout]:
    """The cluster's nodes found under the data dir, or the single broker (as node 1) when there are
    none."""
    root = Layout.from_settings(settings).data
    found = {}
    for path in root.glob("node-*"):
        suffix = path.name.removeprefix("node-")
        if suffix.isdigit() and path.is_dir():
            found[int(suffix)] = node_layout(settings, int(suffix))
    return dict(sorted(found.items())) or {1: Layout.from_settings(settings)}


def is_cluster(settings: Settings) -> bool:
    """Whether the data dir holds a cluster's nodes rather than the single broker."""
    return any(path.is_dir() for path in Layout.from_settings(settings).data.glob("node-[0-9]*"))


def status(settings: Settings) -> list[NodeStatus]:
    result = []
    for n, lay in known_nodes(settings).items():
        pid = kafka_local.read_pid(lay)
        bootstrap = f"{lay.host}:{lay.port}"
        running = pid is not None and node_answers(lay, n)
        result.append(NodeStatus(n, pid, bootstrap, running))
    return result


def status_json(nodes: list[NodeStatus]) -> str:
    return msgspec.json.encode({"nodes": nodes}).decode()


def stop(settings: Settings) -> str:
    """SIGTERM to every node at once (a controlled shutdown each), then wait for all. The last nodes of
    a cluster may wait for a controller quorum that has already gone: after KILL_AFTER_SECONDS they
    get SIGKILL (their logs are recovered at the next start; nothing acknowledged lives only in a
    process's memory)."""
    layouts = known_nodes(settings)
    pids = {n: pid for n, lay in layouts.items() if (pid := kafka_local.read_pid(lay)) is not None}
    if not pids:
        for lay in layouts.values():
            lay.pid_file.unlink(missing_ok=True)
        return "Kafka is not running"
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    alive = dict(pids)
    killed: list[int] = []
    _wait_gone(alive, layouts, KILL_AFTER_SECONDS if len(layouts) > 1 else STOP_SECONDS)
    if alive and len(layouts) > 1:
        for pid in alive.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = sorted(alive)
        _wait_gone(alive, layouts, STOP_SECONDS)
    if alive:
        stuck = ", ".join(f"node {n} pid {pid}" for n, pid in alive.items())
        raise KafkaLocalError(
            f"Kafka ({stuck}) did not stop within {STOP_SECONDS:.0f}s of SIGTERM; "
            f"inspect the kafka.log beside each pid file, then `kill -9` the stuck pid"
        )
    if len(layouts) == 1:
        return f"Kafka stopped (pid {next(iter(pids.values()))})"
    stopped = "Kafka stopped (" + ", ".join(f"node {n} pid {pid}" for n, pid in pids.items()) + ")"
    if killed:
        nodes = ", ".join(map(str, killed))
        stopped += (
            f"; node {nodes} killed after {KILL_AFTER_SECONDS:.0f}s of SIGTERM (no controller quorum left)"
        )
    return stopped


def _wait_gone(alive: dict[int, int], layouts: dict[int, Layout], seconds: float) -> None:
    """Wait up to `seconds` for the processes in `alive` (node -> pid) to exit, removing each (and its
    pid file) as it goes: what is left in `alive` did not exit."""
    deadline = time.monotonic() + seconds
    while alive and time.monotonic() < deadline:
        for n, pid in list(alive.items()):
            kafka_local.reap(pid)
            if not _alive(pid):
                layouts[n].pid_file.unlink(missing_ok=True)
                del alive[n]
        if alive:
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    # A node started by another process (a test, `eventpipe dev`) is not ours to reap: once it has
    # exited it stays a zombie until its parent waits for it, and a zombie is gone.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not kafka_local.zombie(pid)
