"""The stop rules: the consumer's never ends; replay's seeks its partitions to where it starts (or
to what it has stored, after a rebalance) and ends once every position reaches the high watermarks
taken at its start, never while positions may be ahead of what is stored. And Outcome, which replay
sums into its summary."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition

from consumers.batch import Outcome
from consumers.stop_rule import Bounds, UntilCaughtUp, UntilStopped

P0, P1, P2 = (TopicPartition("raw", n) for n in range(3))


class Positions:
    def __init__(self, held: Mapping[TopicPartition, int]) -> None:
        self.at = dict(held)

    def held(self) -> set[TopicPartition]:
        return set(self.at)

    async def position(self, tp: TopicPartition) -> int:
        at: int = self.at[tp]
        return at


def replay() -> UntilCaughtUp:
    return UntilCaughtUp(Bounds(start={P0: 3, P1: 0}, end={P0: 10, P1: 4}))


async def test_the_consumer_runs_from_the_group_commits_until_stopped() -> None:
    rule = UntilStopped()
    assert rule.pipelined
    assert rule.on_assigned({P0, P1}) == {}
    assert not rule.on_abandoned(closing=False)
    assert not await rule.reached_end(Positions({P0: 10**9}))


async def test_replay_seeks_to_its_start_then_to_what_it_stored() -> None:
    rule = replay()
    assert not rule.pipelined  # the end is judged from positions: none may run ahead of the sink
    assert rule.on_assigned({P0, P2}) == {P0: 3}  # only what it holds and has bounds for
    rule.on_committed({P0: 7})
    assert rule.on_assigned({P0, P1}) == {P0: 7, P1: 0}


async def test_replay_ends_once_every_position_reaches_its_end() -> None:
    rule = replay()
    assert not await rule.reached_end(Positions({P0: 10, P1: 3}))
    assert not await rule.reached_end(Positions({P0: 10}))  # a partition not held: another member's
    assert await rule.reached_end(Positions({P0: 10, P1: 4}))
    assert await rule.reached_end(Positions({P0: 12, P1: 4, P2: 0}))


async def test_a_batch_abandoned_by_a_rebalance_holds_the_end_until_the_reassignment() -> None:
    rule = replay()
    done = Positions({P0: 10, P1: 4})
    assert not rule.on_abandoned(closing=True)  # the run goes on
    assert not await rule.reached_end(done)  # positions may be past records not stored
    rule.on_assigned({P0, P1})  # sought back to what is stored
    assert await rule.reached_end(done)


def test_a_batch_abandoned_outside_a_rebalance_stops_the_replay() -> None:
    assert replay().on_abandoned(closing=False)


def test_outcomes_add_up_by_key_keeping_zero_counts() -> None:
    first = Outcome(3, {("topsort", "stored"): 2, ("dfinery", "stored"): 0}, {("topsort", "late"): 1})
    second = Outcome(2, {("topsort", "stored"): 1, ("topsort", "duplicate"): 4}, {})
    total = Outcome() + first + second
    assert total == Outcome(
        5,
        {("topsort", "stored"): 3, ("dfinery", "stored"): 0, ("topsort", "duplicate"): 4},
        {("topsort", "late"): 1},
    )
    assert total.by_outcome() == {"stored": 3, "duplicate": 4}
    assert total.by_reason() == {"late": 1}
