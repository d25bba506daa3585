"""Kafka records as the receiver writes them (body + RecordMeta headers), with unique event ids, for
pre-filling a topic the consumers drain; and the canonical rows they become, for the sinks' limits."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from bench.payloads import TENANT, Scenario, tag
from consumers.decode import decode_records
from pipeline.canonical import CanonicalEvent
from pipeline.formats import all_formats
from pipeline.record import RecordMeta


@dataclass
class Record:
    """Shaped like aiokafka's ConsumerRecord as far as consumers.decode reads it."""

    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = "bench"
    partition: int = 0
    offset: int = 0


@dataclass
class Mix:
    """The record mix: full batches of the three batching vendors, in turn."""

    scenarios: list[Scenario]
    events_per_cycle: int = field(init=False)

    def __post_init__(self) -> None:
        self.events_per_cycle = sum(s.events for s in self.scenarios)

    def event_count(self, events: int) -> int:
        """How many events records(events) holds (whole records: at least `events`)."""
        made = 0
        for scenario in itertools.cycle(self.scenarios):
            if made >= events:
                return made
            made += scenario.events
        return made

    def records(self, events: int, start: int = 0) -> Iterator[Record]:
        """Records holding at least `events` events, each with its own ids."""
        route_of = {"topsort": "events", "impression": "impression", "retailrocket": "visitorEvents"}
        now_ms = int(time.time() * 1000)
        n = start
        made = 0
        for scenario in itertools.cycle(self.scenarios):
            if made >= events:
                return
            n += 1
            meta = RecordMeta(scenario.vendor, route_of[scenario.vendor], TENANT, now_ms, f"bench-{n}")
            yield Record(scenario.body(tag(n)), meta.headers(), offset=n)
            made += scenario.events


def canonical(records: list[Record]) -> list[CanonicalEvent]:
    decoded = decode_records(records, all_formats())
    if decoded.dead:
        raise RuntimeError(f"bench records failed to decode: {decoded.dead[0].detail}")
    return decoded.events


async def prefill(bootstrap: str, topic: str, records: Iterator[Record]) -> tuple[int, int]:
    """Writes the records (lz4, acks=all); returns (records, value bytes)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        compression_type="lz4",
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )
    await producer.start()
    count = size = 0
    try:
        pending = []
        for record in records:
            pending.append(await producer.send(topic, record.value, headers=record.headers))
            count += 1
            size += len(record.value)
            if len(pending) >= 500:
                for fut in pending:
                    await fut
                pending.clear()
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    return count, size
