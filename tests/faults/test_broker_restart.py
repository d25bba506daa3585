"""A private Kafka broker killed (SIGKILL) and, separately, stopped (SIGTERM) under a steady stream,
then restarted. While it is down the receiver answers 503 and never 2xx, and says not-ready; it
recovers by itself when the broker is back, and so do the consumers; every request answered 2xx is
in the sink exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.rig import assert_no_loss
from tests.faults.services import PrivateBroker
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.network]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_receiver_refuses_while_kafka_is_down_and_nothing_acknowledged_is_lost(
    how: str, private_broker: PrivateBroker, make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig(
        f"Kafka broker {how}", private_broker.bootstrap, f"sqlite:///{tmp_path / 'events.db'}"
    )
    receiver = await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    ledger = rig.ledger
    async with rig.sender():
        await rig.acknowledged(50)
        outage = ledger.open_window()
        await asyncio.to_thread(private_broker.kill if how == "SIGKILL" else private_broker.stop)
        # From here until the restart begins, no reply may be a 2xx.
        outage.fault_in_effect()
        await wait_for(
            lambda: outage.replies["503"] >= 30,
            60,
            lambda: f"503s while the broker is down; replies {dict(outage.replies)}",
        )

        async def not_ready() -> bool:
            return not await receiver.ready(rig.http)

        await wait_for(not_ready, 30, "the receiver to say not-ready while Kafka is down")
        ledger.close_window()
        await asyncio.to_thread(private_broker.start)
        # It recovers by itself: more acknowledgements, no restart of the receiver.
        await rig.acknowledged(50)
    # A record on its way to the broker when it went down may have been written though its
    # acknowledgement never came back; the receiver then answered 503 when its produce timed out. The
    # receiver cannot know: the same ambiguity as a client-side timeout, so such a request may be
    # stored. Any other refused request must not be.
    figures = await rig.settle(outage, excused=outage.caught)
    caught_stored = set(figures.phantom) & outage.caught
    print(
        f"in flight when the broker went down: {len(outage.caught)}, their replies "
        f"{dict(outage.caught_replies)}; refused yet stored: {len(caught_stored)}"
    )
    assert figures.outage is not None
    assert not [s for s in figures.outage if s.startswith("2")], figures.line()
    assert figures.outage.get("503", 0) >= 30, figures.line()
    assert receiver.running
    assert_no_loss(figures)
