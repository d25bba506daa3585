"""The typed snapshot `eventpipe status` collects and renders, and the pure arithmetic of lag."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec
from aiokafka import TopicPartition

from consumers.lookup import Cluster, GroupDescription


class Broker(msgspec.Struct, frozen=True):
    bootstrap: str
    reachable: bool
    cluster: Cluster | None = None
    error: str | None = None


class PartitionOffsets(msgspec.Struct, frozen=True):
    partition: int
    first: int  # log start offset: older records are gone (retention)
    next: int  # high watermark


class Topic(msgspec.Struct, frozen=True):
    name: str
    role: str  # raw or dlq
    exists: bool
    retention_ms: int | None = None
    partitions: list[PartitionOffsets] = msgspec.field(default_factory=list)
    records: int = 0  # held now: sum of next - first
    high_watermark: int = 0  # sum over partitions: records ever written


class PartitionLag(msgspec.Struct, frozen=True):
    partition: int
    high_watermark: int
    committed: int | None  # None: the group never committed here
    lag: int


class Group(msgspec.Struct, frozen=True):
    group_id: str
    topic: str  # the raw topic, whose lag this is
    description: GroupDescription | None = None
    lag: list[PartitionLag] = msgspec.field(default_factory=list)
    total_lag: int = 0
    error: str | None = None


class SinkRows(msgspec.Struct, frozen=True):
    url: str  # password redacted
    reachable: bool
    rows: int | None = None
    error: str | None = None


class DeadLetters(msgspec.Struct, frozen=True):
    since: datetime
    count: int = 0
    by_reason: dict[str, int] = msgspec.field(default_factory=dict)
    reasons_complete: bool = True  # False when only the first records were read for the breakdown
    error: str | None = None


class Snapshot(msgspec.Struct, frozen=True):
    taken_at: datetime
    broker: Broker
    sink: SinkRows
    topics: list[Topic] = msgspec.field(default_factory=list)
    group: Group | None = None
    dead_letters: DeadLetters | None = None

    @property
    def healthy(self) -> bool:
        """The broker and the sink both answered."""
        return self.broker.reachable and self.sink.reachable


def topic(
    name: str,
    role: str,
    first: Mapping[TopicPartition, int],
    next_: Mapping[TopicPartition, int],
    retention_ms: int | None,
) -> Topic:
    parts = [PartitionOffsets(tp.partition, first[tp], next_[tp]) for tp in sorted(next_)]
    return Topic(
        name,
        role,
        True,
        retention_ms,
        parts,
        records=sum(p.next - p.first for p in parts),
        high_watermark=sum(p.next for p in parts),
    )


def lag(
    first: Mapping[TopicPartition, int],
    next_: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
) -> list[PartitionLag]:
    """Records the group has still to process, per partition. Without a commit, or with one older
    than the log start, the group's consumers begin at the log start (auto_offset_reset=earliest),
    so every record still held counts."""
    rows = []
    for tp in sorted(next_):
        done = committed.get(tp)
        position = first[tp] if done is None else max(done, first[tp])
        rows.append(PartitionLag(tp.partition, next_[tp], done, max(0, next_[tp] - position)))
    return rows
