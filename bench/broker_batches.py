"""The broker's CPU per record against the records per batch, without the receiver: aiokafka producers
write batches of N Topsort-sized records (acks=all, idempotent, LZ4, the receiver's own settings) in a
closed loop to a private broker, and the broker's CPU is read from /proc. With `--modes txn` each batch
is also its own Kafka transaction (what a "503 means never stored" guarantee would cost: the receiver
could then abort a batch whose acknowledgement timed out, issue #14).

    python -m bench.broker_batches [--records 1,16,64] [--modes plain,txn] [--seconds 5]

It separates what a produce request costs the broker from what the records in it cost, on a box where
nothing else runs: the receiver's bench measures the broker while the receiver and the load client
share its cores."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench import services
from bench.cpu import CpuMeter
from bench.payloads import by_name, scenarios
from pipeline import topics
from pipeline.settings import Settings

PARTITIONS = 12
# The receiver's record headers (pipeline/record.py), with values of their usual sizes.
HEADERS = [
    ("source", b"topsort"),
    ("route", b"events"),
    ("tenant", b"bench"),
    ("received_at", b"1796312715666"),
    ("request_id", b"0" * 32),
    ("schema", b"1"),
]


@dataclass(frozen=True)
class Figure:
    mode: str
    records_per_batch: int
    batches_per_s: float
    records_per_s: float
    p50_ms: float
    p99_ms: float
    broker_us_per_record: float
    broker_us_per_batch: float


async def _producers(bootstrap: str, count: int, transactional: bool) -> list[AIOKafkaProducer]:
    producers = []
    for i in range(count):
        extra: dict[str, Any] = (
            {"transactional_id": f"bench-{uuid.uuid4().hex[:8]}-{i}"} if transactional else {}
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, compression_type="lz4", **extra
        )
        await producer.start()
        producers.append(producer)
    return producers


async def measure(
    bootstrap: str, broker_pid: int, topic: str, mode: str, records: int, seconds: float, count: int
) -> Figure:
    transactional = mode == "txn"
    value = by_name(scenarios())["topsort-single"].body()
    producers = await _producers(bootstrap, count, transactional)
    latencies: list[float] = []

    async def run(producer: AIOKafkaProducer, first: int) -> None:
        partition = first
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            partition = (partition + count) % PARTITIONS
            batch = producer.create_batch()
            for _ in range(records):
                batch.append(timestamp=None, key=None, value=value, headers=HEADERS)
            batch.close()
            if transactional:
                await producer.begin_transaction()
                # send_batch does not add its partition to the transaction (send() does); the Java
                # client's and librdkafka's batch paths had the same gap.
                producer._txn_manager.maybe_add_partition_to_txn(TopicPartition(topic, partition))
            await (await producer.send_batch(batch, topic, partition=partition))
            if transactional:
                await producer.commit_transaction()
            latencies.append(time.perf_counter() - started)

    try:
        meter = CpuMeter([broker_pid]).start()
        await asyncio.gather(*(run(p, i) for i, p in enumerate(producers)))
        cpu = meter.stop()
    finally:
        for producer in producers:
            await producer.stop()
    latencies.sort()
    batches = len(latencies)
    return Figure(
        mode,
        records,
        batches / seconds,
        batches * records / seconds,
        latencies[batches // 2] * 1e3,
        latencies[min(batches - 1, int(batches * 0.99))] * 1e3,
        cpu / (batches * records) * 1e6,
        cpu / batches * 1e6,
    )


def _topic(bootstrap: str) -> str:
    """A raw topic made as the pipeline makes its own (pipeline.topics), with PARTITIONS partitions."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap,
        raw_topic=f"bench.batches.{tag}.raw",
        dlq_topic=f"bench.batches.{tag}.dlq",
        raw_partitions=PARTITIONS,
    )
    asyncio.run(topics.ensure(settings))
    return settings.raw_topic


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", default="1,16,64", help="records per batch, comma-separated")
    parser.add_argument("--modes", default="plain,txn", help="plain and/or txn, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--producers", type=int, default=2, help="one per receiver worker")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, interleaved")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of writes first (the JIT)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, services.kafka(None, Path(workdir)) as broker:
        assert broker.pid is not None
        topic = _topic(broker.bootstrap)
        # A fresh JVM interprets before it compiles: its first seconds cost several times the rest.
        for mode in args.modes.split(","):
            asyncio.run(
                measure(broker.bootstrap, broker.pid, topic, mode, 16, args.warmup / 2, args.producers)
            )
        print(
            "| mode | records per batch | batches/s | records/s | p50 / p99 ms per batch | broker µs per record | broker µs per batch |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for records in (int(r) for r in args.records.split(",")):
            for _ in range(args.repeat):
                for mode in args.modes.split(","):
                    f = asyncio.run(
                        measure(
                            broker.bootstrap, broker.pid, topic, mode, records, args.seconds, args.producers
                        )
                    )
                    print(
                        f"| {f.mode} | {f.records_per_batch} | {f.batches_per_s:,.0f} | {f.records_per_s:,.0f} | "
                        f"{f.p50_ms:.2f} / {f.p99_ms:.2f} | {f.broker_us_per_record:.1f} | {f.broker_us_per_batch:.0f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
