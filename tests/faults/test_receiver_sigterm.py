"""The receiver sent SIGTERM with requests in flight: it stops accepting, the requests in hand finish
(2xx once Kafka has the record) or are refused (503 while draining), and it exits cleanly. No 2xx is
lost; a new receiver on the same port takes over the stream."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.rig import assert_no_loss
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


async def test_receiver_drains_on_sigterm_and_acknowledges_nothing_it_loses(
    kafka_bootstrap: str, make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig("receiver SIGTERM", kafka_bootstrap, f"sqlite:///{tmp_path / 'events.db'}")
    receiver = await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    ledger = rig.ledger
    async with rig.sender(lanes=8, pace_seconds=0.02):
        await rig.acknowledged(100)
        await wait_for(lambda: len(ledger.in_flight) >= 4, 30, "requests in flight")
        drain = ledger.open_window()
        receiver.send(signal.SIGTERM)
        drain.fault_in_effect()
        assert await receiver.exited(60) == 0, receiver.tail()
        ledger.close_window()
        await rig.start_receiver()
        await rig.acknowledged(100)
    figures = await rig.settle(drain)
    print(
        f"in flight at SIGTERM: {len(drain.caught)}, their replies: {dict(drain.caught_replies)}; "
        f"replies to requests sent while it drained: {figures.outage}"
    )
    assert_no_loss(figures)
