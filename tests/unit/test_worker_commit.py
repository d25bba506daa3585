"""The worker's commit names only the partitions it still holds: aiokafka refuses a commit naming a
partition since given to another member, and then commits none of the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from consumers.sinks import open_sink
from consumers.worker import Worker
from pipeline.metrics import Metrics
from pipeline.settings import Settings

P0, P1, P2 = (TopicPartition("raw", n) for n in range(3))


class Holding:
    """The consumer's assignment and commits, as far as Worker._commit uses them."""

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


def worker_holding(tmp_path: Path, assigned: set[TopicPartition]) -> tuple[Worker, Holding]:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", sink=f"sqlite:///{tmp_path / 'events.db'}")
    worker = Worker(settings, Metrics(CollectorRegistry()), open_sink(settings.sink))
    holding = Holding(assigned)
    consumer: Any = holding
    worker._consumer = consumer
    return worker, holding


async def test_a_batch_collected_across_a_rebalance_commits_what_is_still_held(tmp_path: Path) -> None:
    worker, holding = worker_holding(tmp_path, {P0, P2})
    await worker._commit({P0: 5, P1: 7, P2: 9})
    await worker.close()
    assert holding.commits == [{P0: OffsetAndMetadata(5, ""), P2: OffsetAndMetadata(9, "")}]


async def test_nothing_held_nothing_committed(tmp_path: Path) -> None:
    worker, holding = worker_holding(tmp_path, {P2})
    await worker._commit({P0: 5, P1: 7})
    await worker.close()
    assert holding.commits == []
