"""A rebalance storm: consumer workers added and removed (SIGTERM, as an orchestrator scales down)
while the stream goes on, 2 → 4 → 1 → 3 → 2, each change before the group has settled from the
last. A leaving worker finishes its batch and commits before its partitions move; nothing
acknowledged is lost or stored twice."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.rig import assert_no_loss

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres]

SCALE = (4, 1, 3, 2)


@pytest.mark.parametrize("sink_url", ["postgresql"], indirect=True)
async def test_rebalance_storm_loses_and_duplicates_nothing(
    kafka_bootstrap: str, sink_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig("rebalance storm", kafka_bootstrap, sink_url, raw_partitions=6)
    await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    async with rig.sender():
        await rig.acknowledged(50)
        for size in SCALE:
            grow = max(0, size - len(rig.consumers))
            await asyncio.gather(*(rig.start_consumer(wait_ready=False) for _ in range(grow)))
            leaving = rig.consumers[: max(0, len(rig.consumers) - size)]
            await asyncio.gather(*(rig.stop_consumer(c) for c in leaving))
            await rig.acknowledged(40)
    figures = await rig.settle()
    assert_no_loss(figures)
