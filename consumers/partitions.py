"""The partitions this consumer holds, as the steps act on them: pause and resume (while the sink
is down), rewind (an abandoned batch is fetched again), commit (only what is still held), and idle
while paused, still polling so that the group keeps this member."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumers.decode import RawRecord
from pipeline.clock import Clock
from pipeline.metrics import Metrics

log = structlog.get_logger("eventpipe.consumer")

LAG_REFRESH_SECONDS = 2.0
IDLE_POLL_SECONDS = 0.5


class GroupConsumer(Protocol):
    """The parts of aiokafka's AIOKafkaConsumer the consumer's steps use (fakes in unit tests)."""

    def assignment(self) -> AbstractSet[TopicPartition]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]: ...


def next_offsets(records: Iterable[RawRecord]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record: what to commit."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = r.offset + 1
    return offsets


class Partitions:
    def __init__(self, consumer: GroupConsumer, metrics: Metrics, clock: Clock) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._clock = clock
        self._paused = False
        self._last_lag = 0.0
        self._committed: dict[TopicPartition, int] = {}  # the group's commit, per held partition

    def held(self) -> AbstractSet[TopicPartition]:
        return self._consumer.assignment()

    async def position(self, tp: TopicPartition) -> int:
        return await self._consumer.position(tp)

    def pause(self) -> None:
        if not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def rewind(self, records: Iterable[RawRecord]) -> None:
        """Seek each held partition back to the first of these records. The consumer's position is
        already past them: without the rewind the next batch's commit would cover them."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        held = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in held:
                self._consumer.seek(tp, offset)

    async def idle(self, seconds: float, until: Callable[[], bool]) -> None:
        """Wait while paused, still polling so the group does not think this member is stuck; end
        early once `until()` (a rebalance or a stop: nothing left to wait for)."""
        deadline = self._clock.monotonic() + seconds
        while not until():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            fetched = await self._consumer.getmany(timeout_ms=int(min(remaining, IDLE_POLL_SECONDS) * 1000))
            # Paused partitions return nothing; partitions assigned anew by a rebalance during the
            # poll are not paused, and what they returned is not for us to drop: it is read again.
            self.rewind(r for part in fetched.values() for r in part)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        # A batch collected across a rebalance may hold records of partitions since given to another
        # member. aiokafka refuses a commit naming one (IllegalStateError) and commits none of the
        # others: the last batch before the load stopped would leave its partitions' lag for good.
        # The partitions still ours are committed; the others' new owner re-reads from their last
        # commit, and the sink's key absorbs what this batch stored.
        assigned = self._consumer.assignment()
        owned = {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if tp in assigned}
        if not owned:
            return
        began = time.perf_counter()
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on (rebalance): the new owner re-reads from the last commit and dedup
            # absorbs what this batch stored.
            log.warning("commit_failed", error=str(exc))
            return
        self._metrics.commit_latency.observe(time.perf_counter() - began)
        self._committed.update((tp, o.offset) for tp, o in owned.items())

    async def commit_skipped(self) -> None:
        """Commit each held partition's position where it is past the group's commit. Called with no
        batch in hand and nothing fetched, so every offset below a position was either in a batch
        committed already or skipped by the consumer: a transaction's commit or abort marker, or an
        aborted record (producers/receiver/transactions.py). A batch's commit stops at its last record,
        so without this a partition whose last offset is a marker would show a lag of 1 for good."""
        ahead: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            position = await self._consumer.position(tp)
            if tp not in self._committed:
                self._committed[tp] = await self._consumer.committed(tp) or 0
            if position > self._committed[tp]:
                ahead[tp] = position
        if ahead:
            await self.commit(ahead)

    async def report_lag(self) -> None:
        """The lag gauge of each held partition, every LAG_REFRESH_SECONDS at most."""
        now = self._clock.monotonic()
        if now - self._last_lag < LAG_REFRESH_SECONDS:
            return
        self._last_lag = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except KafkaError:
                continue
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    def forget_lag(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self._committed.pop(tp, None)
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))
