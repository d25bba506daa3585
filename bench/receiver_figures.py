"""The receiver's figures per request kind: the maximum (closed loop), latency at fractions of it
(paced load), CPU seconds per million events, records verified durable in Kafka."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import procs, profile, wrk
from bench.cpu import CpuMeter, per_million
from bench.payloads import Scenario
from bench.services import Broker

FIRST_WARMUP_SECONDS = 8.0


async def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in parts or ()])
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


def records_in(bootstrap: str, topic: str) -> int:
    return asyncio.run(_end_offsets(bootstrap, topic))


def produce_batches(url: str) -> tuple[float, float]:
    """(batches, records) the receiver has sent to Kafka so far, from its /metrics (all workers)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # noqa: S310 - our loopback URL
        text = resp.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "eventpipe_kafka_produce_batch_records"
        for sample in family.samples
    }
    return (
        samples.get("eventpipe_kafka_produce_batch_records_count", 0.0),
        samples.get("eventpipe_kafka_produce_batch_records_sum", 0.0),
    )


def measure(
    env: dict[str, str],
    broker: Broker,
    topic: str,
    scenarios: list[Scenario],
    workers: int,
    seconds: float,
    connections: int,
    fractions: list[float],
    logdir: Path,
    profile_dir: Path | None,
) -> dict[str, dict[str, Any]]:
    bootstrap = broker.bootstrap
    out: dict[str, dict[str, Any]] = {}
    with procs.receiver(env, workers, logdir) as (url, proc):
        for i, scenario in enumerate(scenarios):
            # Warm-up: connections, the producer's metadata, the topic's new segments and the broker's
            # JIT. The first needs longer: 2 s of it left the first two request kinds of a quick run
            # with twice the receiver's and several times the broker's CPU per request of the others.
            if i == 0:
                wrk.run(url, scenario, FIRST_WARMUP_SECONDS, connections=connections)
            elif seconds >= 5:
                wrk.run(url, scenario, 2, connections=connections)
            before = records_in(bootstrap, topic)
            batches_before = produce_batches(url)
            meter = CpuMeter([proc.pid]).start()
            broker_meter = CpuMeter([broker.pid] if broker.pid else []).start()
            top = wrk.run(url, scenario, seconds, connections=connections)
            cpu = meter.stop()
            broker_cpu = broker_meter.stop() if broker.pid else None
            durable = records_in(bootstrap, topic) - before
            batches, batched = (a - b for a, b in zip(produce_batches(url), batches_before, strict=True))
            events = top.ok * scenario.events
            size = len(scenario.body())
            fig: dict[str, Any] = {
                "max": top.as_dict(),
                "events_per_s": top.rps * scenario.events,
                "kafka_bytes_per_s": top.rps * size,
                "record_bytes": size,
                "receiver_cpu_s": round(cpu, 2),
                "receiver_cpu_s_per_m_events": per_million(cpu, events),
                "receiver_cpu_us_per_request": cpu / top.ok * 1e6 if top.ok else None,
                "broker_cpu_us_per_request": broker_cpu / top.ok * 1e6 if broker_cpu and top.ok else None,
                "client_cpu_us_per_request": top.client_cpu_s / top.ok * 1e6 if top.ok else None,
                "records_durable": durable,
                # The broker's work per record falls as the records of concurrent requests share batches.
                "records_per_batch": batched / batches if batches else None,
                "durable_ok": durable >= top.ok,
                "curve": [],
                "batched": scenario.batched,
                "events_per_request": scenario.events,
            }
            print(
                f"  receiver {scenario.name}: {top.rps:,.0f} req/s = {fig['events_per_s']:,.0f} ev/s, "
                f"p99 {top.p99_ms:.1f} ms, {fig['receiver_cpu_s_per_m_events'] or 0:,.1f} CPU-s/M ev, "
                f"{durable:,} records in Kafka for {top.ok:,} 2xx ({fig['records_per_batch'] or 0:,.1f} a batch), "
                f"client CPU {top.client_cpu_share:.0%}",
                flush=True,
            )
            for fraction in fractions:
                paced = wrk.run(url, scenario, seconds, connections=connections, rate=top.rps * fraction)
                fig["curve"].append({"fraction": fraction, **paced.as_dict()})
                print(
                    f"    at {fraction:.0%}: {paced.rps:,.0f} req/s, p50 {paced.p50_ms:.1f} ms, p99 {paced.p99_ms:.1f} ms",
                    flush=True,
                )
            fig["curve"].append({"fraction": 1.0, **top.as_dict()})
            if profile_dir is not None and profile.available():
                collapsed = profile_dir / f"receiver-{scenario.name}.txt"
                spy = profile.start(proc.pid, seconds, collapsed)
                wrk.run(url, scenario, seconds, connections=connections)
                if spy is not None:
                    spy.wait()
                    if collapsed.exists():
                        (profile_dir / f"receiver-{scenario.name}.top.txt").write_text(
                            profile.summarise(collapsed)
                        )
            out[scenario.name] = fig
    return out
