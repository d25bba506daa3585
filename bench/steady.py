"""Request-to-row latency at one fixed rate, in the steady state, with the batches that were late:
the receiver (2 workers) and 2 consumers on a private broker and PostgreSQL, Topsort batches with
unique ids paced by wrk, then every row's `stored_at − received_at`. Where `python -m bench` gives
the latency at half of whatever maximum its run found, this holds the rate fixed, so settings can be
compared at equal load; the late batches (a batch's rows share `stored_at`) show whether a tail is a
stall of everything or a few slow requests.

    .venv/bin/python -m bench.steady --rate 20000 [--seconds 20] [--set batch_max_wait_ms=25 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from bench import procs, services, wrk
from bench.consumer_figures import health_port, wait_settled
from bench.e2e import histogram
from bench.payloads import by_name, scenarios, write_tenants
from bench.procs import pipeline_env
from pipeline import topics
from pipeline.settings import Settings

WARMUP_SECONDS = 5.0
DRAIN_SECONDS = 30.0
# The consumer's steps whose time histograms say where a late batch spent it.
STEPS = ("eventpipe_sink_write_duration_seconds", "eventpipe_consumer_commit_duration_seconds")
SLOW_BOUNDS = (0.1, 0.25)
LATE_MS = 250.0


@dataclass(frozen=True)
class Batch:
    stored_at: datetime
    rows: int
    slowest_ms: float


async def _latencies(dsn: str, since: datetime) -> tuple[list[float], list[Batch]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM stored_at - received_at)::float8 * 1000 FROM events "
            "WHERE received_at >= $1 ORDER BY 1",
            since,
        )
        batches = await conn.fetch(
            "SELECT stored_at, count(*), max(extract(epoch FROM stored_at - received_at)::float8) * 1000 "
            "FROM events WHERE received_at >= $1 GROUP BY stored_at ORDER BY stored_at",
            since,
        )
    finally:
        await conn.close()
    return [float(r[0]) for r in rows], [Batch(b[0], int(b[1]), float(b[2])) for b in batches]


async def _wait_rows(dsn: str, since: datetime, expected: int, seconds: float) -> None:
    """Until the rows of every accepted request are stored, or the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT count(*) FROM events WHERE received_at >= $1"
        while loop.time() < deadline:
            if await conn.fetchval(query, since) >= expected:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def _slow_shares(
    before: dict[float, float], after: dict[float, float]
) -> tuple[float, list[tuple[float, float]]]:
    """Observations between two scrapes of a histogram, and the share above each of SLOW_BOUNDS."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    shares = []
    for bound in SLOW_BOUNDS:
        within = after.get(bound, 0.0) - before.get(bound, 0.0)
        shares.append((bound, 1 - within / total if total else 0.0))
    return total, shares


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.steady", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rate", type=float, default=20_000, help="events/s offered (Topsort batches of 200)"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--set", action="append", default=[], help="a setting for the pipeline's processes")
    args = parser.parse_args()
    scenario = by_name(scenarios())["topsort-batch"]
    work = Path(tempfile.mkdtemp(prefix="eventpipe-steady-"))
    try:
        with services.kafka(None, work) as broker, services.postgres(None, False) as pg:
            if pg is None:
                raise SystemExit("no PostgreSQL: install it (apt-get install postgresql)")
            dsn = asyncio.run(pg.create_database("steady"))
            topic = f"steady.{uuid.uuid4().hex[:8]}"
            settings = Settings(kafka_bootstrap=broker.bootstrap, raw_topic=topic, dlq_topic=topic + ".dlq")
            asyncio.run(topics.ensure(settings))
            env = pipeline_env(
                os.environ,
                kafka_bootstrap=broker.bootstrap,
                raw_topic=topic,
                dlq_topic=topic + ".dlq",
                tenants=str(write_tenants(work / "tenants.toml")),
                sink=dsn,
                rate_limits="retailrocket=0,dfinery=0,topsort=0,impression=0",
                **dict(item.split("=", 1) for item in args.set),
            )
            env["EVENTPIPE_LOG_LEVEL"] = "info"
            logs = work / "logs"
            logs.mkdir()
            rps = args.rate / scenario.events
            with procs.receiver(env, 2, logs) as (url, _), procs.consumers(env, 2, logs):
                wait_settled([logs / f"consumer-{i}.log" for i in range(2)], settings.raw_partitions)
                ports = [health_port(logs / f"consumer-{i}.log") for i in range(2)]
                wrk.run(url, scenario, WARMUP_SECONDS, connections=64, rate=rps, unique=True)
                before = {name: histogram(ports, name) for name in STEPS}
                since = datetime.now().astimezone()
                paced = wrk.run(url, scenario, args.seconds, connections=64, rate=rps, unique=True)
                asyncio.run(_wait_rows(dsn, since, paced.ok * scenario.events, DRAIN_SECONDS))
                steps = {name: _slow_shares(before[name], histogram(ports, name)) for name in STEPS}
            latencies, batches = asyncio.run(_latencies(dsn, since))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not latencies:
        raise SystemExit("no rows stored")
    settings_text = ", ".join(args.set) or "defaults"
    print(
        f"{settings_text}: offered {args.rate:,.0f} events/s, achieved {paced.rps * scenario.events:,.0f}; "
        f"{len(latencies):,} rows in {len(batches):,} batches ({len(batches) / args.seconds:.0f}/s); "
        f"request-to-row p50 {_pct(latencies, 0.5):.0f} ms, p99 {_pct(latencies, 0.99):.0f} ms, "
        f"max {latencies[-1]:.0f} ms"
    )
    for name, (count, shares) in steps.items():
        print(
            f"{name}: {count:,.0f} observed; "
            + ", ".join(f"{share:.1%} over {bound * 1000:.0f} ms" for bound, share in shares)
        )
    late = [b for b in batches if b.slowest_ms > LATE_MS]
    print(f"batches with a row later than {LATE_MS:.0f} ms: {len(late)}")
    for b in late[:20]:
        print(f"  {b.stored_at:%H:%M:%S.%f}  {b.rows:6,} rows  slowest {b.slowest_ms:,.0f} ms")


if __name__ == "__main__":
    main()
