"""In-memory stand-ins for what the consumer's steps talk to: the group consumer, the sink, the
dead-letter producer, a clock and a vendor format. They keep one shared journal, so a test can read
the order in which the steps acted. No sockets, no sleeping: waiting advances the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from consumers import dedup, window
from consumers.batch import Prepare
from consumers.checkpoint import Checkpoint
from consumers.deadletter import DeadLetter
from consumers.partitions import Partitions
from consumers.sinks.base import WriteResult
from consumers.stop_rule import StopRule, UntilStopped
from consumers.strategy import Steps, Totals
from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.canonical import CanonicalEvent
from pipeline.errors import SinkUnavailable, UnstorableEvent
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta

TOPIC = "raw"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RETRY = BackoffPolicy(initial=0.2, cap=1.0)


class Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.seconds - 1000.0)

    def monotonic(self) -> float:
        return self.seconds


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def record(partition: int, offset: int, body: str, source: str = "fake") -> Record:
    """A record as the receiver writes it. `body`: event ids separated by spaces; `id@late` is an
    event older than the window, `id@future` one beyond the future skew."""
    meta = RecordMeta(source, "events", "shop", int(NOW.timestamp() * 1000), f"req-{partition}-{offset}")
    return Record(TOPIC, partition, offset, body.encode(), meta.headers())


class FakeFormat:
    """A vendor whose body is a list of event ids (see `record`)."""

    source = "fake"

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        received = datetime.fromtimestamp(meta.received_at_ms / 1000, UTC)
        ages = {"late": timedelta(hours=72), "future": -timedelta(hours=1)}
        events = []
        for token in body.decode().split():
            event_id, _, when = token.partition("@")
            events.append(
                CanonicalEvent(
                    tenant=meta.tenant,
                    source=meta.source,
                    event_type="click",
                    event_id=event_id,
                    occurred_at=received - ages.get(when, timedelta(0)),
                    received_at=received,
                    raw=token.encode(),
                )
            )
        return events


class Journal(list[str]):
    """What the fakes did, in order."""


class Consumer:
    """The group consumer: its assignment, pauses, seeks and commits. getmany returns nothing and
    moves the fake clock on by its timeout."""

    def __init__(self, journal: Journal, clock: Clock, assigned: AbstractSet[TopicPartition]) -> None:
        self.journal = journal
        self.clock = clock
        self.assigned = set(assigned)
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, *partitions: TopicPartition) -> None:
        self.journal.append("pause")
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.journal.append("resume")
        self.paused -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.journal.append(f"seek {partition.partition}@{offset}")
        self.positions[partition] = offset

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    async def position(self, partition: TopicPartition) -> int:
        return self.positions.get(partition, 0)

    async def committed(self, partition: TopicPartition) -> int | None:
        return None

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        self.journal.append("commit")
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        # A poll takes a millisecond at least, as a real one does, whatever its timeout.
        self.clock.seconds += max(timeout_ms, 1) / 1000
        await asyncio.sleep(0)
        return {}


class Sink:
    """Rows keyed like the real sink. `down` writes fail as SinkUnavailable first; event ids in
    `unstorable` are refused as UnstorableEvent; `hold`, when set, keeps a write waiting until it is
    set again."""

    name = "fake"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rows: set[tuple[str, str, str, str]] = set()
        self.down = 0
        self.unstorable: set[str] = set()
        self.hold: asyncio.Event | None = None
        self.writing = asyncio.Event()  # set while a write waits on `hold`

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def count(self) -> int:
        return len(self.rows)

    async def write(self, events: Sequence[CanonicalEvent], stored_at: datetime) -> WriteResult:
        self.journal.append(f"write {' '.join(e.event_id for e in events)}")
        if self.hold is not None:
            self.writing.set()
            await self.hold.wait()
        if self.down:
            self.down -= 1
            raise SinkUnavailable("fake sink down")
        if any(e.event_id in self.unstorable for e in events):
            raise UnstorableEvent("fake sink refuses the value")
        inserted: dict[str, int] = {}
        for e in events:
            if e.dedup_key() not in self.rows:
                self.rows.add(e.dedup_key())
                inserted[e.source] = inserted.get(e.source, 0) + 1
        return WriteResult(inserted)


class DeadLetters:
    """The dead-letter producer: `refuse` sends fail as the broker being unreachable."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: list[DeadLetter] = []
        self.refuse = False

    async def send_all(self, letters: Sequence[DeadLetter], dead_at: datetime) -> None:
        if not letters:
            return
        self.journal.append(f"dead letters {' '.join(letter.reason for letter in letters)}")
        if self.refuse:
            raise KafkaConnectionError("fake: dead-letter topic unreachable")
        self.sent.extend(letters)


@dataclass
class Rig:
    """A consumer's steps over the fakes, for partitions 0 and 1 of the raw topic."""

    journal: Journal
    clock: Clock
    consumer: Consumer
    sink: Sink
    dead_letters: DeadLetters
    recent: dedup.RecentKeys
    metrics: Metrics
    partitions: Partitions
    checkpoint: Checkpoint
    steps: Steps


def rig(rule: StopRule | None = None) -> Rig:
    journal, clock = Journal(), Clock()
    consumer = Consumer(journal, clock, {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)})
    sink, letters = Sink(journal), DeadLetters(journal)
    recent = dedup.RecentKeys(1000)
    metrics = Metrics(CollectorRegistry())
    fake: Any = consumer
    partitions = Partitions(fake, metrics, clock)
    dlq: Any = letters
    checkpoint = Checkpoint(sink, dlq, partitions, recent, metrics, clock, RETRY)
    formats: Any = {"fake": FakeFormat()}
    steps = Steps(
        prepare=Prepare(formats, window.WindowPolicy(), recent, metrics),
        checkpoint=checkpoint,
        partitions=partitions,
        rule=rule or UntilStopped(),
        refetch=Backoff(RETRY),
        stopping=asyncio.Event(),
        totals=Totals(),
    )
    return Rig(journal, clock, consumer, sink, letters, recent, metrics, partitions, checkpoint, steps)
