"""The strategy of one assignment over in-memory fakes: batches pipelined and finished in order, a
revoke (close, then join) waiting for the batch in hand and dropping the one not begun, an abandoned
batch fetched again, and a fresh strategy per assignment."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from consumers.stop_rule import Bounds, UntilCaughtUp
from tests.unit.consumer_fakes import TOPIC, Rig, record, rig

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def holding_writes(r: Rig) -> asyncio.Event:
    """From now on each sink write waits until the returned event is set."""
    release = asyncio.Event()
    r.sink.hold = release
    return release


async def test_batches_are_committed_in_order_and_added_up() -> None:
    r = rig()
    strategy = r.steps.create()
    await strategy.submit([record(0, 0, "a b")])
    await strategy.submit([record(1, 0, "c")])
    await strategy.flush()
    assert r.journal == ["write a b", "commit", "write c", "commit"]
    assert r.consumer.commits == [{P0: 1}, {P1: 1}]
    assert r.steps.totals.batches == 2
    assert r.steps.totals.outcome.records == 2
    assert r.steps.totals.outcome.by_outcome() == {"stored": 3}


async def test_the_next_batch_is_prepared_while_one_is_written_and_dedups_against_it() -> None:
    r = rig()
    release = holding_writes(r)
    strategy = r.steps.create()
    await strategy.submit([record(0, 0, "a")])
    await r.sink.writing.wait()
    # Prepared while "a" is in the sink: its key is in flight, so "a" again is a duplicate.
    second = asyncio.create_task(strategy.submit([record(0, 1, "a b")]))
    await asyncio.sleep(0)
    assert r.metrics.registry.get_sample_value("eventpipe_consumer_batch_records_count") == 2
    assert r.journal == ["write a"]
    release.set()
    await second
    await strategy.flush()
    assert r.journal == ["write a", "commit", "write b", "commit"]
    assert r.steps.totals.outcome.by_outcome() == {"stored": 2, "duplicate": 1}


async def test_a_revoke_waits_for_the_batch_in_hand_and_drops_the_one_not_begun() -> None:
    r = rig()
    release = holding_writes(r)
    strategy = r.steps.create()
    await strategy.submit([record(0, 0, "a")])
    await r.sink.writing.wait()
    waiting = asyncio.create_task(strategy.submit([record(0, 1, "b")]))  # prepared, waits for "a"
    await asyncio.sleep(0)

    strategy.close()
    joined = asyncio.create_task(strategy.join())
    await asyncio.sleep(0)
    assert not joined.done()  # the batch in hand is still being written
    release.set()
    await joined
    await waiting
    assert r.consumer.commits == [{P0: 1}]  # "a" committed before the partitions went; "b" never begun
    assert r.journal == ["write a", "commit"]

    await strategy.submit([record(0, 1, "b")])  # after the revoke: nothing is begun
    assert r.journal == ["write a", "commit"]
    # The next assignment's strategy is a fresh one: it takes batches again.
    fresh = r.steps.create()
    await fresh.submit([record(0, 1, "b")])
    await fresh.flush()
    assert r.consumer.commits == [{P0: 1}, {P0: 2}]


async def test_an_abandoned_batch_and_the_one_after_it_are_fetched_again_after_a_pause() -> None:
    r = rig()
    r.dead_letters.refuse = True
    strategy = r.steps.create()
    await strategy.submit([record(0, 4, "a@late")])
    await strategy.submit([record(1, 9, "b")])  # the next batch: prepared, then the first abandoned
    assert r.consumer.commits == []
    assert r.journal == ["dead letters late", "seek 0@4", "seek 1@9", "pause", "resume"]
    # The wait before the fetch grows while batches keep failing, and starts over after a commit.
    assert r.steps.refetch.next_delay == 0.4
    r.dead_letters.refuse = False
    await strategy.submit([record(0, 4, "a@late")])
    await strategy.flush()
    # Then, with nothing in hand, partition 1's position (rewound to "b", not fetched again here): every
    # offset below it was committed before.
    assert r.consumer.commits == [{P0: 5}, {P1: 9}]
    assert r.steps.refetch.next_delay == 0.2


async def test_within_a_revoke_an_abandoned_batch_is_left_to_the_last_commit() -> None:
    r = rig()
    r.dead_letters.refuse = True
    release = holding_writes(r)
    strategy = r.steps.create()
    await strategy.submit([record(0, 4, "x a@late")])
    await r.sink.writing.wait()
    strategy.close()
    release.set()
    await strategy.join()
    await strategy.flush()
    # Abandoned at its dead letters; no seek, no pause: the partitions restart from the last commit.
    assert r.journal == ["write x", "dead letters late"]
    assert r.consumer.commits == []


async def test_without_pipelining_a_batch_is_committed_before_submit_returns() -> None:
    r = rig(UntilCaughtUp(Bounds(start={P0: 0}, end={P0: 1})))
    strategy = r.steps.create()
    await strategy.submit([record(0, 0, "a")])
    assert r.journal == ["write a", "commit"]


async def test_a_replay_whose_dead_letters_are_refused_stops() -> None:
    r = rig(UntilCaughtUp(Bounds(start={P0: 0}, end={P0: 1})))
    r.dead_letters.refuse = True
    strategy = r.steps.create()
    await strategy.submit([record(0, 0, "a@late")])
    assert r.steps.stopping.is_set()
    assert r.consumer.commits == []
    assert "seek 0@0" not in r.journal  # stopping: nothing fetched again


async def test_with_nothing_in_hand_a_position_past_the_commit_is_committed() -> None:
    r = rig()
    strategy = r.steps.create()
    await strategy.submit([record(0, 5, "a")])
    await strategy.flush()
    assert r.consumer.commits == [{P0: 6}]
    # The consumer skipped a transaction's commit marker at offset 6: its position is past the commit.
    r.consumer.positions[P0] = 7
    await strategy.flush()
    await strategy.flush()
    assert r.consumer.commits == [{P0: 6}, {P0: 7}]  # once: the next idle flush finds nothing ahead
