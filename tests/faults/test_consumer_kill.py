"""Consumer workers killed with SIGKILL while a batch is being written, several times, and restarted
under a steady stream: the batch was not committed, so Kafka hands it to the group again, and the
sink's key absorbs whatever part of it was already stored. Nothing acknowledged is lost, nothing is
stored twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.processes import Consumer, total
from tests.faults.rig import Rig, assert_no_loss
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

KILLS = 3


class BatchBeingWritten:
    """Watches a consumer for a batch begun (counted as it starts) and not yet written. Its /metrics is
    served by the worker's own event loop, so such an answer comes while the worker awaits its sink
    write. The gap is measured against the smallest seen, since a batch with nothing new to write
    widens it for good."""

    def __init__(self, rig: Rig, consumer: Consumer) -> None:
        self._rig = rig
        self._consumer = consumer
        self._floor: float | None = None

    async def seen(self) -> bool:
        samples = await self._consumer.metrics(self._rig.http)
        if not samples:
            return False
        started = total(samples, "eventpipe_consumer_batch_records_count")
        written = total(samples, "eventpipe_sink_write_duration_seconds_count")
        gap = started - written
        if self._floor is None or gap < self._floor:
            self._floor = gap
            return False
        return gap > self._floor


async def test_consumers_killed_mid_batch_lose_and_duplicate_nothing(
    kafka_bootstrap: str, make_rig: RigFactory, tmp_path: Path
) -> None:
    # Larger batches than the suite's default: a write takes long enough to be interrupted.
    rig = await make_rig(
        f"consumer SIGKILL x{KILLS}",
        kafka_bootstrap,
        f"sqlite:///{tmp_path / 'events.db'}",
        batch_max_wait_ms=300,
    )
    await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    async with rig.sender():
        await rig.acknowledged(50)
        for _ in range(KILLS):
            victim = rig.consumers[0]
            await wait_for(
                BatchBeingWritten(rig, victim).seen,
                90,
                lambda v=victim: f"{v.name} to be writing a batch\n{v.tail()}",  # type: ignore[misc]
            )
            await rig.kill_consumer(victim)
            await rig.start_consumer()
            await rig.acknowledged(50)
    figures = await rig.settle()
    # Redelivered events that the surviving and restarted workers found already stored (a kill that
    # fell between a write and its commit); a kill before the write's end leaves nothing to absorb.
    absorbed = 0.0
    for consumer in rig.consumers:
        samples = await consumer.metrics(rig.http)
        absorbed += total(samples, "eventpipe_consumer_events_total", outcome="duplicate")
    print(f"redelivered after the kills and absorbed by the sink's key: {absorbed:.0f} events")
    assert_no_loss(figures)
