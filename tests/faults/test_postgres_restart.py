"""A private PostgreSQL cluster stopped under load (cleanly, `-m fast`, and as a crash, `-m immediate`)
and started again: the receiver keeps acknowledging (Kafka holds the records), the consumers pause
and say not-ready for as long as the database is down, back off, and catch up by themselves when it
is back. Nothing acknowledged is lost or stored twice."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.rig import assert_no_loss
from tests.faults.services import PrivatePostgres
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_consumers_pause_while_postgres_is_down_and_catch_up(
    mode: str, private_postgres: PrivatePostgres, kafka_bootstrap: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(f"PostgreSQL stop -m {mode}", kafka_bootstrap, private_postgres.dsn)
    await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    async with rig.sender():
        await rig.acknowledged(50)
        outage = rig.ledger.open_window()
        await asyncio.to_thread(private_postgres.stop, mode)
        outage.fault_in_effect()
        await wait_for(rig.all_not_ready, 60, lambda: f"every consumer to say not-ready\n{rig.tails()}")
        # Requests go on being acknowledged (Kafka holds them); the consumers stay not-ready meanwhile.
        assert await rig.not_ready_throughout(100) == []
        rig.ledger.close_window()
        await asyncio.to_thread(private_postgres.start)
        for consumer in rig.consumers:
            await rig.wait_ready(consumer)
        await rig.acknowledged(50)
    figures = await rig.settle(outage)
    assert_no_loss(figures)
