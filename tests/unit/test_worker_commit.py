"""The consumer's commit names only the partitions it still holds: aiokafka refuses a commit naming a
partition since given to another member, and then commits none of the others."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from consumers.partitions import Partitions
from pipeline.clock import SystemClock
from pipeline.metrics import Metrics

P0, P1, P2 = (TopicPartition("raw", n) for n in range(3))


class Holding:
    """The consumer's assignment and commits, as far as Partitions.commit uses them."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        assert set(offsets) <= self.assigned, "aiokafka: IllegalStateError, nothing committed"
        self.commits.append(offsets)

    async def stop(self) -> None:
        return None


def partitions_holding(assigned: set[TopicPartition]) -> tuple[Partitions, Holding]:
    holding = Holding(assigned)
    consumer: Any = holding
    return Partitions(consumer, Metrics(CollectorRegistry()), SystemClock()), holding


async def test_a_batch_collected_across_a_rebalance_commits_what_is_still_held() -> None:
    partitions, holding = partitions_holding({P0, P2})
    await partitions.commit({P0: 5, P1: 7, P2: 9})
    assert holding.commits == [{P0: OffsetAndMetadata(5, ""), P2: OffsetAndMetadata(9, "")}]


async def test_nothing_held_nothing_committed() -> None:
    partitions, holding = partitions_holding({P2})
    await partitions.commit({P0: 5, P1: 7})
    assert holding.commits == []
