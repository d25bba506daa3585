"""Consumer workers killed with SIGKILL in the middle of a batch, several times, and restarted under a
steady stream: the killed batch was never committed, so Kafka hands it to the group again and the
sink's key absorbs whatever part of it had been written. Nothing acknowledged is lost, nothing is
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


async def _batch_in_hand(rig: Rig, consumer: Consumer) -> bool:
    """The consumer has begun a batch (counted when it starts) that it has not committed yet. Its
    /metrics is served by the worker's own event loop, so such an answer comes while the worker
    awaits its sink write or its commit."""
    samples = await consumer.metrics(rig.http)
    started = total(samples, "eventpipe_consumer_batch_records_count")
    committed = total(samples, "eventpipe_consumer_commit_duration_seconds_count")
    return started > committed


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
                lambda v=victim: _batch_in_hand(rig, v),  # type: ignore[misc]
                60,
                lambda v=victim: f"{v.name} to be inside a batch\n{v.tail()}",  # type: ignore[misc]
            )
            await rig.kill_consumer(victim)
            await rig.start_consumer()
            await rig.acknowledged(50)
    figures = await rig.settle()
    # Evidence that kills fell between a write and its commit: the redelivered events that the
    # surviving and restarted workers found already stored.
    absorbed = 0.0
    for consumer in rig.consumers:
        samples = await consumer.metrics(rig.http)
        absorbed += total(samples, "eventpipe_consumer_events_total", outcome="duplicate")
    print(f"redelivered after the kills and absorbed by the sink's key: {absorbed:.0f} events")
    assert_no_loss(figures)
