"""The disk under a SQLite sink fills up, or turns read-only, under load (a small loop-mounted ext4
filesystem): the consumers stop committing (every committed record is in the sink), say not-ready
for as long as they cannot write, and catch up by themselves once space or write access is back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.rig import Rig, assert_no_loss
from tests.faults.services import SmallDisk
from tests.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


async def _break_and_repair(rig: Rig, breaks: Callable[[], object], repairs: Callable[[], object]) -> None:
    await rig.start_receiver()
    for _ in range(2):
        await rig.start_consumer()
    async with rig.sender():
        await rig.acknowledged(50)
        outage = rig.ledger.open_window()
        breaks()
        outage.fault_in_effect()
        await wait_for(rig.all_not_ready, 60, lambda: f"every consumer to say not-ready\n{rig.tails()}")
        assert await rig.committed_but_not_stored() == []
        # Records keep coming; no consumer claims to be ready meanwhile, none commits unstored records.
        assert await rig.not_ready_throughout(100) == []
        assert await rig.committed_but_not_stored() == []
        rig.ledger.close_window()
        repairs()
        for consumer in rig.consumers:
            await rig.wait_ready(consumer)
        await rig.acknowledged(50)
    assert_no_loss(await rig.settle(outage))


async def test_disk_full_pauses_the_consumers_until_space_returns(
    small_disk: SmallDisk, kafka_bootstrap: str, make_rig: RigFactory
) -> None:
    db = small_disk.path / "events.db"
    rig = await make_rig("SQLite disk full", kafka_bootstrap, f"sqlite:///{db}")
    await _break_and_repair(rig, small_disk.fill, small_disk.free)


async def test_read_only_database_pauses_the_consumers_until_writable(
    small_disk: SmallDisk, kafka_bootstrap: str, make_rig: RigFactory
) -> None:
    db = small_disk.path / "events.db"
    rig = await make_rig("SQLite read-only", kafka_bootstrap, f"sqlite:///{db}")
    wal = db.with_name(db.name + "-wal")
    await _break_and_repair(rig, lambda: small_disk.make_immutable(db, wal), small_disk.make_mutable)
