"""The consumer's partitions while it idles (paused because the sink is down): a poll still runs so
that the group keeps this member, and what it returns for a partition assigned anew meanwhile is read
again rather than dropped, since the consumer's position has already passed it."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from tests.unit.consumer_fakes import TOPIC, Record, record, rig


def _polls_returning(r: Any, batches: list[dict[TopicPartition, list[Record]]]) -> None:
    """The fake consumer's next polls return these, then nothing (moving its clock on as before)."""
    quiet = r.consumer.getmany

    async def getmany(
        *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        found = await quiet(timeout_ms=timeout_ms)
        return batches.pop(0) if batches else found

    r.consumer.getmany = getmany


async def test_records_polled_while_idle_are_fetched_again_not_dropped() -> None:
    r = rig()
    r.partitions.pause()
    given = TopicPartition(TOPIC, 2)
    r.consumer.assigned.add(given)  # a rebalance during the idle: the new partition is not paused
    _polls_returning(r, [{given: [record(2, 5, "a"), record(2, 6, "b")]}])
    await r.partitions.idle(1.0, until=lambda: False)
    assert r.consumer.positions[given] == 5  # the next fetch starts at the first record polled
    assert r.sink.rows == set() and r.consumer.commits == []  # nothing stored or committed meanwhile


async def test_a_partition_given_away_meanwhile_is_not_sought() -> None:
    r = rig()
    r.partitions.pause()
    gone = TopicPartition(TOPIC, 7)  # never (or no longer) held by this member
    _polls_returning(r, [{gone: [record(7, 3, "a")]}])
    await r.partitions.idle(1.0, until=lambda: False)
    assert not [line for line in r.journal if line.startswith("seek")]


async def test_idle_ends_early_once_there_is_nothing_to_wait_for() -> None:
    r = rig()
    r.partitions.pause()
    started = r.clock.monotonic()
    await r.partitions.idle(60.0, until=lambda: r.clock.monotonic() - started >= 1.0)
    assert 1.0 <= r.clock.monotonic() - started < 2.0  # not the whole minute
