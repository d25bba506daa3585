"""End to end: receiver and consumers together, unique ids per request. The sustained rate is what
reaches rows while the load runs at its maximum; then request-to-row latency at half of it, from each
row's received_at (set by the receiver) and stored_at (set by the consumer as the batch's write
begins), and from the consumers' own histogram, which is observed after the commit."""

from __future__ import annotations

import re
import statistics
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, wrk
from bench.consumer_figures import health_port, stored, wait_settled
from bench.cpu import per_million, tree_cpu_seconds
from bench.payloads import Scenario

LATENCY_SECONDS = 10.0
WARMUP_SECONDS = 5.0


def histogram(ports: list[int], name: str) -> dict[float, float]:
    """A histogram's cumulative buckets summed over the consumers' /metrics (all label values)."""
    pattern = re.compile(rf'^{name}_bucket\{{[^}}]*le="([^"]+)"[^}}]*\}} ([0-9.e+]+)$', re.M)
    buckets: dict[float, float] = {}
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for le, value in pattern.findall(text):
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return buckets


def _e2e_histogram(ports: list[int]) -> dict[float, float]:
    return histogram(ports, "eventpipe_end_to_end_seconds")


def _within(before: dict[float, float], after: dict[float, float], bound: float) -> float | None:
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return None
    return (after.get(bound, 0.0) - before.get(bound, 0.0)) / total


def _wait_stored(ports: list[int], target: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    n = stored(ports)
    while n < target and time.monotonic() < deadline:
        time.sleep(0.2)
        n = stored(ports)
    return n


async def _pg_latencies(dsn: str, since: datetime) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM stored_at - received_at)::float8 FROM events WHERE received_at >= $1",
            since,
        )
    finally:
        await conn.close()
    return [float(r[0]) for r in rows]


def _sqlite_latencies(path: str, since: datetime) -> list[float]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT received_at, stored_at FROM events").fetchall()
    finally:
        conn.close()
    out = []
    for received, stored_at in rows:
        r = datetime.fromisoformat(received)
        if r >= since:
            out.append((datetime.fromisoformat(stored_at) - r).total_seconds())
    return out


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def measure(
    receiver_env: dict[str, str],
    consumer_env: dict[str, str],
    sink_url: str,
    scenario: Scenario,
    workers: int,
    consumers: int,
    seconds: float,
    connections: int,
    logdir: Path,
    partitions: int,
) -> dict[str, Any]:
    import asyncio

    run_dir = logdir / f"e2e-{int(time.time())}"
    run_dir.mkdir()
    consumer_env = {**consumer_env, "EVENTPIPE_LOG_LEVEL": "info"}
    with (
        procs.receiver(receiver_env, workers, run_dir) as (url, receiver),
        procs.consumers(consumer_env, consumers, run_dir) as workers_,
    ):
        ports = [health_port(run_dir / f"consumer-{i}.log") for i in range(consumers)]
        wait_settled([run_dir / f"consumer-{i}.log" for i in range(consumers)], partitions)
        # Maximum: closed loop, unique ids.
        wrk.run(url, scenario, 1, connections=connections, unique=True)
        _wait_stored(ports, 1, 30)
        base = stored(ports)
        cpu_r0, cpu_c0 = tree_cpu_seconds([receiver.pid]), tree_cpu_seconds([w.pid for w in workers_])
        t0 = time.monotonic()
        top = wrk.run(url, scenario, seconds, connections=connections, unique=True)
        t1 = time.monotonic()
        during = stored(ports) - base
        cpu_r1, cpu_c1 = tree_cpu_seconds([receiver.pid]), tree_cpu_seconds([w.pid for w in workers_])
        accepted_events = top.ok * scenario.events
        # Everything accepted must reach a row; the time it takes is part of the sustained rate.
        _wait_stored(ports, base + accepted_events, max(60.0, accepted_events / 5000))
        t2 = time.monotonic()
        after = stored(ports) - base
        sustained = after / (t2 - t0)
        result: dict[str, Any] = {
            "scenario": scenario.name,
            "receiver_workers": workers,
            "consumers": consumers,
            "accepted_events_per_s": accepted_events / (t1 - t0),
            "stored_during_load_events_per_s": during / (t1 - t0),
            "sustained_events_per_s": sustained,
            "drain_s": round(t2 - t1, 2),
            "all_stored": after >= accepted_events,
            "receiver_cpu_s_per_m_events": per_million(cpu_r1 - cpu_r0, accepted_events),
            "consumer_cpu_s_per_m_events_during_load": per_million(cpu_c1 - cpu_c0, during),
            "max": top.as_dict(),
        }
        print(
            f"  e2e max: accepted {result['accepted_events_per_s']:,.0f} ev/s, stored during load "
            f"{result['stored_during_load_events_per_s']:,.0f} ev/s, sustained (incl. drain {t2 - t1:.1f}s) "
            f"{sustained:,.0f} ev/s",
            flush=True,
        )
        # Latency at half of the sustained rate, in the steady state of that rate: a warm-up at it first
        # lets the backlog of the maximum, and what it set off (autovacuum of the rows just inserted,
        # a checkpoint of their WAL), pass.
        rate = 0.5 * sustained / scenario.events
        wrk.run(url, scenario, WARMUP_SECONDS, connections=connections, rate=rate, unique=True)
        since = datetime.now().astimezone()
        hist0 = _e2e_histogram(ports)
        base = stored(ports)
        # A p99 needs a few thousand requests behind it: at least LATENCY_SECONDS, even in a quick run.
        paced = wrk.run(
            url, scenario, max(seconds, LATENCY_SECONDS), connections=connections, rate=rate, unique=True
        )
        _wait_stored(ports, base + paced.ok * scenario.events, 60)
        hist1 = _e2e_histogram(ports)
    if sink_url.startswith("sqlite:///"):
        latencies = _sqlite_latencies(sink_url.removeprefix("sqlite:///"), since)
    else:
        latencies = asyncio.run(_pg_latencies(sink_url, since))
    result["half_load"] = {
        "offered_rps": rate,
        "achieved_rps": paced.rps,
        "events_per_s": paced.rps * scenario.events,
        "http_p50_ms": paced.p50_ms,
        "http_p99_ms": paced.p99_ms,
        "rows": len(latencies),
        "row_p50_ms": _pct(latencies, 0.50),
        "row_p99_ms": _pct(latencies, 0.99),
        "row_mean_ms": statistics.fmean(latencies) * 1000 if latencies else None,
        "committed_within_250ms": _within(hist0, hist1, 0.25),
        "committed_within_100ms": _within(hist0, hist1, 0.1),
    }
    h = result["half_load"]
    print(
        f"  e2e at 50%: {h['events_per_s']:,.0f} ev/s, request-to-row p50 {h['row_p50_ms'] or 0:.0f} ms, "
        f"p99 {h['row_p99_ms'] or 0:.0f} ms; committed within 250 ms: {(h['committed_within_250ms'] or 0):.1%}",
        flush=True,
    )
    return result
