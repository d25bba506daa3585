"""Soak: the whole pipeline under steady mixed traffic for N minutes, watching for leaks and lag.

A private Kafka broker (unless --kafka names one), the receiver with two workers, two consumers and
the SQLite sink in a temp dir, and `eventpipe loadgen`, each its own process. Every few seconds the
resident memory of each process and the consumer group's lag (end offsets minus committed offsets
of the raw topic) are sampled. At the end: memory at start / middle / end per process, lag per
minute, whether the consumers' counts and the sink's rows match loadgen's prediction, and a verdict.

Flat memory: the median RSS of the last third of the load is within MEMORY_GROWTH (10 %) of the
median of the middle third (the first third is warm-up: JIT, caches, heap growth).
Flat lag: the last third's largest lag is at most max(1.5 × the middle third's, 5 s of traffic),
and the lag is back to 0 within DRAIN_SECONDS of the load ending.

Each consumer keeps up to EVENTPIPE_DEDUP_CACHE_SIZE recent event keys in memory (500,000 by default,
about 250 bytes each): its memory grows until that many new events have passed through it, which at
300 req/s of mixed traffic takes longer than 10 minutes. The soak says whether the cache was still
filling; `EVENTPIPE_DEDUP_CACHE_SIZE=50000 bench/soak.py ...` shows the plateau within a short run.

    .venv/bin/python bench/soak.py --minutes 10 --rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.services import free_port
from eventpipe import dev
from pipeline import kafka_local, topics
from pipeline.kafka_security import kafka_client_options
from pipeline.settings import Settings

MEMORY_GROWTH = 0.10
LAG_GROWTH = 1.5
LAG_FLOOR_SECONDS = 5.0
DRAIN_SECONDS = 120.0
# Memory at "start" is read once every process is up and has served traffic for a while.
WARM_SECONDS = 15.0
MIB = 1024 * 1024


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss: dict[str, float]  # process name -> MiB
    lag: int | None
    loading: bool


@dataclass
class Soak:
    settings: Settings
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    broker_pid: int | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used, as last seen

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def processes(self) -> dict[str, psutil.Process]:
        """Every process to watch by name: the receiver's workers are children of its main process."""
        found: dict[str, psutil.Process] = {}
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                main = psutil.Process(proc.pid)
                found[name] = main
                if name == "receiver":
                    workers = [c for c in main.children() if "resource_tracker" not in " ".join(c.cmdline())]
                    for i, child in enumerate(sorted(workers, key=lambda p: p.pid)):
                        found[f"receiver worker {i + 1}"] = child
            except psutil.Error:
                continue
        if self.broker_pid is not None:
            with contextlib.suppress(psutil.Error):
                found["kafka broker"] = psutil.Process(self.broker_pid)
        return found

    def rss(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self.processes().items():
            try:
                out[name] = proc.memory_info().rss / MIB
            except psutil.Error:
                continue
        return out

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self.processes().items():
            try:
                times = proc.cpu_times()
                out[name] = times.user + times.system
            except psutil.Error:
                continue
        return out

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop; killing it", file=sys.stderr)
                proc.kill()


class LagProbe:
    """The consumer group's lag on the raw topic: end offsets minus committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = AIOKafkaAdminClient(**kafka_client_options(settings))
        self._consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self._settings.raw_topic)
        while not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(self._settings.raw_topic)
        self._partitions = [TopicPartition(self._settings.raw_topic, p) for p in sorted(parts)]

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self) -> int | None:
        try:
            ends = await self._consumer.end_offsets(self._partitions)
            committed = await self._admin.list_consumer_group_offsets(
                self._settings.consumer_group, partitions=self._partitions
            )
        except Exception as exc:  # a probe that fails is a gap in the series, not the end of the soak
            print(f"lag probe failed: {exc}", file=sys.stderr)
            return None
        total = 0
        for tp in self._partitions:
            done = committed.get(tp)
            offset = done.offset if done is not None and done.offset >= 0 else 0
            total += max(0, ends[tp] - offset)
        return total


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    if not dev.wait_ready(url, proc, 90):
        raise RuntimeError(f"{what} did not become ready ({url})")


def consumer_counts(ports: list[int]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name != "eventpipe_consumer_events":
                continue
            for s in family.samples:
                if s.name.endswith("_total"):
                    by = counts.setdefault(s.labels["source"], {})
                    by[s.labels["outcome"]] = by.get(s.labels["outcome"], 0) + int(s.value)
    return counts


def thirds(values: list[float]) -> tuple[list[float], list[float], list[float]]:
    n = len(values)
    return values[: n // 3], values[n // 3 : 2 * n // 3], values[2 * n // 3 :]


def report(soak: Soak, rate: float, cpu: dict[str, float], drained_after: float | None) -> bool:
    loading = [s for s in soak.samples if s.loading]
    names = sorted({n for s in loading for n in s.rss}, key=lambda n: (n.startswith("kafka"), n))
    print(
        f"\nResident memory (MiB)   start = at {WARM_SECONDS:.0f} s, middle / end = medians of the middle / last"
        " third of the load"
    )
    header = f"  {'process':<20} {'start':>8} {'middle':>8} {'end':>8} {'max':>8} {'end/mid':>8} {'cpu s':>8}  flat"
    print(header)
    memory_flat = True
    for name in names:
        series = [s.rss[name] for s in loading if name in s.rss]
        warm = [s.rss[name] for s in loading if name in s.rss and s.at >= WARM_SECONDS]
        if len(series) < 3 or not warm:
            continue
        _, middle, last = thirds(series)
        mid, end = statistics.median(middle), statistics.median(last)
        growth = end / mid - 1 if mid else 0.0
        flat = growth <= MEMORY_GROWTH
        memory_flat &= flat
        print(
            f"  {name:<20} {warm[0]:8.1f} {mid:8.1f} {end:8.1f} {max(series):8.1f} "
            f"{growth * 100:+7.1f}% {cpu.get(name, 0.0):8.1f}  {'yes' if flat else 'NO'}"
        )
    print("\nConsumer lag (records of the raw topic not yet committed), largest per minute")
    by_minute: dict[int, int] = {}
    for s in soak.samples:
        if s.lag is not None:
            minute = int(s.at // 60)
            by_minute[minute] = max(by_minute.get(minute, 0), s.lag)
    for minute, lag in sorted(by_minute.items()):
        print(f"  minute {minute + 1:>3}: {lag:>7}")
    lags = [float(s.lag) for s in loading if s.lag is not None]
    lag_flat = False
    if len(lags) >= 3:
        _, middle, last = thirds(lags)
        bound = max(LAG_GROWTH * max(middle), rate * LAG_FLOOR_SECONDS)
        lag_flat = max(last) <= bound and drained_after is not None
        print(
            f"  middle third max {max(middle):.0f}, last third max {max(last):.0f} (bound {bound:.0f}); "
            + (
                f"back to 0 {drained_after:.0f} s after the load ended"
                if drained_after is not None
                else "NOT drained"
            )
        )
    verdict = memory_flat and lag_flat
    print(
        f"\nVerdict: memory {'flat' if memory_flat else 'GROWING'}, lag {'flat' if lag_flat else 'NOT flat'}"
        f" -> {'PASS' if verdict else 'FAIL'}"
    )
    return verdict


def dedup_note(summary: dict[str, Any], consumers: int) -> None:
    """A consumer keeps up to dedup_cache_size recent event keys in memory: until that many events have
    passed through it, its memory grows by design, and a run that short cannot tell growth from a leak."""
    capacity = int(os.environ.get("EVENTPIPE_DEDUP_CACHE_SIZE", Settings().dedup_cache_size))
    per_consumer = summary["expected"]["rows_added"] / consumers
    state = "still filling" if per_consumer < capacity else "full"
    print(
        f"\nDedup cache: each consumer remembers up to {capacity} keys (EVENTPIPE_DEDUP_CACHE_SIZE); about "
        f"{per_consumer:.0f} new events went through each consumer, so the cache was {state} at the end."
    )


def check_prediction(summary: dict[str, Any], counts: dict[str, dict[str, int]], sink: str) -> None:
    import sqlite3

    expected = summary["expected"]["eventpipe_consumer_events_total"]
    print("\nConsumers' counts against loadgen's prediction (eventpipe_consumer_events_total)")
    for source, outcomes in expected.items():
        got = {o: counts.get(source, {}).get(o, 0) for o in outcomes}
        mark = "equal" if got == outcomes else f"DIFFERENT (expected {outcomes})"
        print(f"  {source:<13} {got}  {mark}")
    conn = sqlite3.connect(sink.removeprefix("sqlite:///"))
    try:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    want = summary["expected"]["rows_added"]
    print(
        f"  rows in the sink: {rows} (loadgen expected {want}; uncertain {summary['expected']['uncertain_events']})"
    )


async def sample_until(
    soak: Soak, probe: LagProbe, began: float, interval: float, loadgen: subprocess.Popen[bytes]
) -> float | None:
    """Samples while loadgen runs, then until the lag is back to 0 (returns how long that took)."""
    while loadgen.poll() is None:
        sample = Sample(time.monotonic() - began, soak.rss(), await probe.lag(), True)
        soak.samples.append(sample)
        soak.cpu.update(soak.cpu_seconds())
        memory = ", ".join(f"{k} {v:.0f}" for k, v in sample.rss.items())
        print(f"  {sample.at:5.0f} s  lag {sample.lag}  MiB: {memory}", flush=True)
        await asyncio.sleep(interval)
    ended = time.monotonic()
    while time.monotonic() - ended < DRAIN_SECONDS:
        lag = await probe.lag()
        soak.samples.append(Sample(time.monotonic() - began, soak.rss(), lag, False))
        if lag == 0:
            return time.monotonic() - ended
        await asyncio.sleep(1.0)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=300.0, help="loadgen requests per second")
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument(
        "--kafka", help="use this broker instead of starting a private one (its RSS is not sampled)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite file)")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="eventpipe-soak-"))
    tag = workdir.name.rsplit("-", 1)[-1]
    bootstrap = args.kafka or f"127.0.0.1:{free_port(pair=True)}"
    settings = Settings(
        kafka_bootstrap=bootstrap,
        data_dir=str(workdir),
        raw_topic=f"soak-{tag}.raw",
        dlq_topic=f"soak-{tag}.dlq",
        consumer_group=f"soak-{tag}",
        sink=f"sqlite:///{workdir / 'events.db'}",
    )
    soak = Soak(settings, workdir)
    private = args.kafka is None
    print(f"soak: {args.minutes:g} min at {args.rate:g} req/s (batch {args.batch}); work dir {workdir}")
    try:
        if private:
            print(kafka_local.start(settings))
            soak.broker_pid = kafka_local.read_pid(kafka_local.Layout.from_settings(settings))
        for line in asyncio.run(topics.ensure(settings)):
            print(line)
        state = workdir / "dev"
        keys = dev.demo_keys(state)
        tenants_path = dev.write_tenants(state, keys)
        http_port = free_port()
        consumer_ports = [free_port(), free_port()]
        env = {
            **os.environ,
            "EVENTPIPE_KAFKA_BOOTSTRAP": bootstrap,
            "EVENTPIPE_RAW_TOPIC": settings.raw_topic,
            "EVENTPIPE_DLQ_TOPIC": settings.dlq_topic,
            "EVENTPIPE_CONSUMER_GROUP": settings.consumer_group,
            "EVENTPIPE_SINK": settings.sink,
            "EVENTPIPE_TENANTS": str(tenants_path),
            "EVENTPIPE_HTTP_PORT": str(http_port),
            "EVENTPIPE_LOG_FORMAT": "json",
            "EVENTPIPE_LOG_LEVEL": "warning",
        }
        base = f"http://127.0.0.1:{http_port}"
        receiver = soak.spawn("receiver", ["receiver", "--workers", "2"], env)
        consumers = [
            soak.spawn(f"consumer {i + 1}", ["consumer"], {**env, "EVENTPIPE_METRICS_PORT": str(port)})
            for i, port in enumerate(consumer_ports)
        ]
        wait_ready(f"{base}/readyz", receiver, "the receiver")
        for proc, port in zip(consumers, consumer_ports, strict=True):
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc, "a consumer")
        summary_path = workdir / "loadgen.json"
        loadgen = soak.spawn(
            "loadgen",
            [
                "loadgen",
                *("--url", base, "--credentials", str(state / "demo-keys.json")),
                *("--rate", str(args.rate), "--duration", f"{args.minutes}m", "--batch", str(args.batch)),
                *("--seed", "1", "--json", str(summary_path)),
            ],
            env,
        )
        began = time.monotonic()

        async def watch() -> float | None:
            probe = LagProbe(settings)
            await probe.start()
            try:
                return await sample_until(soak, probe, began, args.interval, loadgen)
            finally:
                await probe.stop()

        drained_after = asyncio.run(watch())
        log = (workdir / "loadgen.log").read_text()
        print(log[log.find("eventpipe loadgen:") :])
        verdict = report(soak, args.rate, soak.cpu, drained_after)
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            dedup_note(summary, len(consumer_ports))
            check_prediction(summary, consumer_counts(consumer_ports), settings.sink)
        (workdir / "samples.json").write_text(json.dumps([s.__dict__ for s in soak.samples]))
        return 0 if verdict else 1
    finally:
        soak.stop_all()
        if private:
            print(kafka_local.stop(settings))
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
