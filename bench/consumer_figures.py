"""The consumers' figures: the receiver's records are drained into a fresh `events` table by 1 and 2
consumer processes; stored events/s between the first and the last stored batch, CPU seconds per
million events, and the row count checked at the end. The records are written once the group is
settled (every consumer holds its share of the partitions): filled before, the first consumer to
join drains alone until the rebalance, and the window measures the rebalance rather than the
consumers."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, profile
from bench.cpu import per_million, tree_cpu_seconds
from consumers.sinks import open_sink

_STORED = re.compile(r'^eventpipe_consumer_events_total\{[^}]*outcome="stored"[^}]*\} ([0-9.e+]+)$', re.M)


def health_port(log: Path, deadline_s: float = 60.0) -> int:
    """The consumer's /metrics port (EVENTPIPE_METRICS_PORT=0 picks one; the start line names it)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if "consumer_started" in line:
                    try:
                        return int(json.loads(line)["health_port"])
                    except (ValueError, KeyError):
                        continue
        time.sleep(0.1)
    raise RuntimeError(f"consumer did not start: see {log}")


def _assignments(log: Path) -> list[set[int]]:
    """The partitions of each assignment the consumer logged, oldest first."""
    found = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
        if "partitions_assigned" in line:
            try:
                found.append(set(json.loads(line)["partitions"]))
            except (ValueError, KeyError, TypeError):
                continue
    return found


def settled(logs: list[Path], partitions: int) -> bool:
    """Every consumer's latest assignment is in, and together they split all partitions exactly."""
    latest = []
    for log in logs:
        assignments = _assignments(log)
        if not assignments:
            return False
        latest.append(assignments[-1])
    return sum(map(len, latest)) == partitions and set().union(*latest) == set(range(partitions))


def wait_settled(logs: list[Path], partitions: int, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not settled(logs, partitions):
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumer group did not settle: see {logs[0].parent}")
        time.sleep(0.1)


def stored(ports: list[int]) -> int:
    total = 0.0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        total += sum(float(v) for v in _STORED.findall(text))
    return int(total)


@dataclass
class Sample:
    t: float
    stored: int
    cpu: float


def drain(
    env: dict[str, str],
    count: int,
    expected: int,
    logdir: Path,
    timeout_s: float,
    profile_out: Path | None = None,
    on_started: Callable[[list[int]], None] | None = None,
    fill: Callable[[], None] | None = None,
    partitions: int = 0,
) -> dict[str, Any]:
    """Runs `count` consumers until `expected` events are stored; rate over the steady part.
    `fill` writes the records once the group has settled on `partitions`."""
    run_dir = logdir / f"consumers-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    env = {**env, "EVENTPIPE_LOG_LEVEL": "info"}
    with procs.consumers(env, count, run_dir) as workers:
        ports = [health_port(run_dir / f"consumer-{i}.log") for i in range(count)]
        pids = [w.pid for w in workers]
        if on_started is not None:
            on_started(ports)
        if fill is not None:
            wait_settled([run_dir / f"consumer-{i}.log" for i in range(count)], partitions)
            fill()
        samples: list[Sample] = []
        spy = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = stored(ports)
            samples.append(Sample(time.monotonic(), n, tree_cpu_seconds(pids)))
            if spy is None and profile_out is not None and n > 0:
                spy = profile.start(pids[0], 5, profile_out)
            if n >= expected:
                break
            time.sleep(0.2)
        if spy is not None:
            spy.wait()
    first = next((s for s in samples if s.stored > 0), None)
    last = samples[-1] if samples else None
    if first is None or last is None or last.t <= first.t:
        return {"error": "nothing stored", "stored": last.stored if last else 0}
    events = last.stored - first.stored
    seconds = last.t - first.t
    cpu = last.cpu - first.cpu
    return {
        "consumers": count,
        "stored": last.stored,
        "expected": expected,
        "complete": last.stored >= expected,
        "events_per_s": events / seconds,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_m_events": per_million(cpu, events),
    }


async def fresh_sink(url: str) -> None:
    """Creates `events` before the consumers start (they would race to create it otherwise)."""
    sink = open_sink(url)
    await sink.start()
    await sink.close()


async def rows(url: str) -> int:
    sink = open_sink(url)
    await sink.start()
    try:
        return await sink.count()
    finally:
        await sink.close()


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)
