"""Collecting one batch from what the group has fetched: bounded by count, bytes and time (the batch
policy). The first step of the loop; what is collected goes to the assignment's strategy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from consumers.decode import RawRecord
from consumers.partitions import GroupConsumer
from pipeline.clock import Clock
from pipeline.settings import Settings


@dataclass(frozen=True)
class BatchPolicy:
    max_records: int = 2000
    max_wait_ms: int = 25
    # One request may hold 200 events: a count of records alone lets a batch (one transaction, and
    # the memory of its rows) grow a hundredfold. The byte bound keeps it near a fixed event count.
    max_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchPolicy:
        return cls(settings.batch_max_records, settings.batch_max_wait_ms, settings.batch_max_bytes)


async def collect(
    consumer: GroupConsumer, policy: BatchPolicy, clock: Clock, stopping: asyncio.Event
) -> list[RawRecord]:
    """Records up to the batch's count and byte bounds, waiting at most its time bound once data
    flows. Records are taken from the fetched buffer a slice at a time, each slice sized to the
    byte budget left, so the byte bound is overshot by about one record."""
    records: list[RawRecord] = []
    size = 0
    deadline = clock.monotonic() + policy.max_wait_ms / 1000
    while len(records) < policy.max_records and size < policy.max_bytes and not stopping.is_set():
        remaining_ms = int((deadline - clock.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        # As many records as the byte budget left holds at the average size so far.
        slice_ = 1 if not records else (policy.max_bytes - size) * len(records) // max(size, 1) + 1
        fetched = await consumer.getmany(
            timeout_ms=remaining_ms, max_records=min(slice_, policy.max_records - len(records))
        )
        for part in fetched.values():
            records.extend(part)
            size += sum(len(r.value or b"") for r in part)
        if not fetched and records:
            break
    return records
