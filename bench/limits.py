"""The denominators, measured in the same run as the pipeline's figures:
L_http  — a no-op aiohttp handler under the same client, payloads and worker count;
L_kafka — Kafka's own ProducerPerformance (kafka-tools) sending the receiver's records its way;
L_pg    — asyncpg COPY of pre-built canonical rows into `events` with its unique key;
L_sqlite — executemany of the same rows into SQLite's `events` (WAL, synchronous=FULL)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import tempfile
import threading
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


# ProducerPerformance prints one line per 5 s window while it runs, and a summary (with percentiles) at
# the end; the limit is read from the windows.
_WINDOW = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency\.?$"
)
WINDOW_SECONDS = 5.0


def _producer_props(bootstrap: str, settings: Settings) -> list[str]:
    """The receiver's producer, as the Java client spells it (producers/receiver/kafka.py)."""
    return [
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={settings.producer_linger_ms}",
        f"compression.type={settings.producer_compression}",
        f"batch.size={256 * 1024}",
        f"max.request.size={settings.max_body_bytes + topics.MESSAGE_BYTES_HEADROOM}",
    ]


def _windows(
    proc: subprocess.Popen[str], into: list[tuple[float, float]], enough: threading.Event, want: int
) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        m = _WINDOW.match(line.strip())
        if m:
            into.append((float(m.group(2)), float(m.group(4))))
            if len(into) >= want:
                enough.set()
    enough.set()  # exited (or failed) before enough windows: the caller finds out


def l_kafka(
    bootstrap: str,
    body: bytes,
    settings: Settings,
    workdir: Path,
    label: str,
    *,
    producers: int,
    windows: int,
) -> dict[str, Any]:
    """ProducerPerformance with the pipeline's own records as payload (same size and compressibility),
    sent the way the receiver sends them: one producer per receiver worker, all at once, with the
    receiver's acks, idempotence, linger, compression (lz4) and batch size. Each producer runs until it
    has reported `windows` 5-second windows after its first; the first is dropped (JVM start and JIT,
    connections, metadata: counting it made a quick run's limit a fifth of the steady one, below what
    the receiver itself reached) and the limit is the sum of the producers' mean steady rates."""
    topic = f"bench.lkafka.{label}.{int(time.time())}"
    asyncio.run(
        topics.ensure(settings.replace(kafka_bootstrap=bootstrap, raw_topic=topic, dlq_topic=topic + ".dlq"))
    )
    payload = workdir / f"lkafka-{label}.payload"
    if b"\n" in body:
        raise ValueError("payload bodies must be single-line JSON")
    payload.write_bytes(body)
    libs = kafka_local.Layout.from_settings(settings).libs
    props = _producer_props(bootstrap, settings)
    cmd = [
        "java", "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(10**9), "--throughput", "-1",
        "--payload-file", str(payload), "--producer-props", *props,
    ]  # fmt: skip
    want = windows + 1
    runs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(producers)
    ]
    seen: list[list[tuple[float, float]]] = [[] for _ in runs]
    done = [threading.Event() for _ in runs]
    readers = [
        threading.Thread(target=_windows, args=(proc, seen[i], done[i], want), daemon=True)
        for i, proc in enumerate(runs)
    ]
    began = time.monotonic()
    for reader in readers:
        reader.start()
    try:
        for event in done:
            event.wait(timeout=want * WINDOW_SECONDS + 120)
    finally:
        for proc in runs:
            proc.terminate()
        for proc in runs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    wall = time.monotonic() - began
    if any(len(s) < want for s in seen):
        raise RuntimeError(f"ProducerPerformance gave {[len(s) for s in seen]} windows, wanted {want} each")
    steady = [s[1:want] for s in seen]
    rec_s = sum(sum(rate for rate, _ in s) / len(s) for s in steady)
    latencies = [lat for s in steady for _, lat in s]
    result = {
        "records_per_s": rec_s,
        "record_bytes": len(body),
        "bytes_per_s": rec_s * len(body),
        "producers": producers,
        "steady_windows": windows,
        "window_seconds": WINDOW_SECONDS,
        "avg_latency_ms": sum(latencies) / len(latencies),
        "wall_s": round(wall, 2),
        "producer_props": props[1:],
    }
    print(
        f"  L_kafka {label}: {rec_s:,.0f} records/s of {len(body)} B = {result['bytes_per_s'] / 1e6:,.1f} MB/s "
        f"({producers} producers, {windows} steady 5 s windows each)"
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
