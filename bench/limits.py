"""The denominators, measured in the same run as the pipeline's figures:
L_http  — a no-op aiohttp handler under the same client, payloads and worker count;
L_kafka — Kafka's own ProducerPerformance (kafka-tools) at the same record size, acks=all;
L_pg    — asyncpg COPY of pre-built canonical rows into `events` with its unique key;
L_sqlite — executemany of the same rows into SQLite's `events` (WAL, synchronous=FULL)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, wrk
from bench.cpu import CpuMeter
from bench.payloads import Scenario
from consumers.sinks.postgres import PostgresSink
from consumers.sinks.schema import SQLITE_INSERT, postgres_row, sqlite_row, sqlite_time
from consumers.sinks.sqlite import SqliteSink
from pipeline import kafka_local, topics
from pipeline.canonical import COLUMNS, CanonicalEvent
from pipeline.settings import Settings


def l_http(
    scenarios: list[Scenario], workers: int, seconds: float, connections: int, logdir: Path
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with procs.noop_server(workers, logdir) as (url, server):
        for scenario in scenarios:
            meter = CpuMeter([server.pid]).start()
            res = wrk.run(url, scenario, seconds, connections=connections)
            cpu = meter.stop()
            out[scenario.name] = {
                **res.as_dict(),
                "events_per_s": res.rps * scenario.events,
                "server_cpu_us_per_request": cpu / res.ok * 1e6 if res.ok else None,
            }
            print(
                f"  L_http {scenario.name}: {res.rps:,.0f} req/s (client CPU {res.client_cpu_share:.0%} of a core)"
            )
    return out


_PERF_LINE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency"
    r"(?:, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th)?"
)


def l_kafka(
    bootstrap: str, body: bytes, total_bytes: int, settings: Settings, workdir: Path, label: str
) -> dict[str, Any]:
    """ProducerPerformance with the pipeline's own records as payload (same size and compressibility)."""
    topic = f"bench.lkafka.{label}.{int(time.time())}"
    asyncio.run(
        topics.ensure(settings.replace(kafka_bootstrap=bootstrap, raw_topic=topic, dlq_topic=topic + ".dlq"))
    )
    payload = workdir / f"lkafka-{label}.payload"
    if b"\n" in body:
        raise ValueError("payload bodies must be single-line JSON")
    payload.write_bytes(body)
    records = max(1000, total_bytes // len(body))
    libs = kafka_local.Layout.from_settings(settings).libs
    props = [
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={settings.producer_linger_ms}",
        f"compression.type={settings.producer_compression}",
        f"batch.size={256 * 1024}",
        f"max.request.size={settings.max_body_bytes + topics.MESSAGE_BYTES_HEADROOM}",
    ]
    cmd = [
        "java", "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(records), "--throughput", "-1",
        "--payload-file", str(payload), "--producer-props", *props,
    ]  # fmt: skip
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    wall = time.monotonic() - began
    matches = [m for m in _PERF_LINE.finditer(proc.stdout) if m.group(6)]
    if proc.returncode != 0 or not matches:
        raise RuntimeError(f"ProducerPerformance failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    m = matches[-1]
    rec_s = float(m.group(2))
    result = {
        "records": int(m.group(1)),
        "record_bytes": len(body),
        "records_per_s": rec_s,
        "bytes_per_s": rec_s * len(body),
        "avg_latency_ms": float(m.group(4)),
        "p50_ms": float(m.group(6)),
        "p99_ms": float(m.group(8)),
        "wall_s": round(wall, 2),
        "producer_props": props[1:],
    }
    print(
        f"  L_kafka {label}: {rec_s:,.0f} records/s of {len(body)} B = {result['bytes_per_s'] / 1e6:,.1f} MB/s"
    )
    return result


async def l_pg(dsn: str, events: list[CanonicalEvent], batch: int) -> dict[str, Any]:
    sink = PostgresSink(dsn)
    await sink.start()  # creates `events` with its key and index
    await sink.close()
    stored_at = datetime.now(UTC)
    rows = [postgres_row(e, stored_at) for e in events]
    conn = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.copy_records_to_table("events", records=rows[i : i + batch], columns=COLUMNS)
        took = time.perf_counter() - began
        stored = int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()
    rate = stored / took
    print(f"  L_pg: {rate:,.0f} rows/s ({stored:,} rows, COPY in batches of {batch:,})")
    return {"rows": stored, "seconds": round(took, 3), "rows_per_s": rate, "batch": batch}


async def l_sqlite(workdir: Path, events: list[CanonicalEvent], batch: int) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(dir=workdir, prefix="lsqlite-")) / "events.db"
    sink = SqliteSink(str(path))
    await sink.start()  # WAL, synchronous=FULL, `events` with its key
    await sink.close()
    stamp = sqlite_time(datetime.now(UTC))
    rows = [sqlite_row(e, stamp) for e in events]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    try:
        began = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(SQLITE_INSERT, rows[i : i + batch])
            conn.execute("COMMIT")
        took = time.perf_counter() - began
        stored = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()
    rate = stored / took
    print(f"  L_sqlite: {rate:,.0f} rows/s ({stored:,} rows, batches of {batch:,})")
    return {"rows": stored, "seconds": round(took, 3), "rows_per_s": rate, "batch": batch}
