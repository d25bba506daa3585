"""The consumer worker: a member of the group on the raw topic. Per batch (bounded by count, bytes and
time): decode → window → dedup (prepared), then write (one transaction) → dead letters acknowledged →
offsets committed (finished). Batches are pipelined: the next one is collected and prepared while the
sink writes the one before, so the worker's CPU and the database's work overlap; batches still finish
one at a time, in order. Nothing is committed past what is stored; a sink outage pauses the
partitions and retries with a capped backoff; a rebalance or SIGTERM lets the batch in hand finish
before partitions are released, and a batch prepared but not begun is dropped uncommitted (the
partitions restart from the last commit)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumers import deadletter, dedup, window
from consumers.decode import DeadRecord, RawRecord, decode_records
from consumers.health import HealthServer, Readiness
from consumers.kafka_wait import until_kafka_accepts
from consumers.sinks.base import Sink, WriteResult
from pipeline.canonical import CanonicalEvent
from pipeline.clock import Clock, SystemClock
from pipeline.errors import SinkUnavailable, UnstorableEvent
from pipeline.formats import all_formats
from pipeline.formats.base import VendorFormat
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.settings import Settings

log = structlog.get_logger("eventpipe.consumer")

SINK_PROBE_SECONDS = 1.0
LAG_REFRESH_SECONDS = 2.0


class BatchAbandoned(Exception):
    """The batch in hand is given up uncommitted (partitions revoked or shutdown while the sink is
    down): Kafka redelivers it, and dedup absorbs whatever part was stored."""


@dataclass(frozen=True)
class BatchPolicy:
    max_records: int = 2000
    max_wait_ms: int = 25
    # One request may hold 200 events: a count of records alone lets a batch (one transaction, and
    # the memory of its rows) grow a hundredfold. The byte bound keeps it near a fixed event count.
    max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class Bounds:
    """A bounded run (replay): each partition is read from `start`, whatever the group committed
    before, and the run ends once every partition's position has reached `end` (the high watermarks
    taken when the run began)."""

    start: Mapping[TopicPartition, int]
    end: Mapping[TopicPartition, int]


@dataclass(frozen=True)
class Prepared:
    """A batch decoded and sorted, ready to write: what `_finish` needs, and the group generation it
    was collected in (a batch from before a rebalance is dropped, not written)."""

    records: Sequence[RawRecord]
    generation: int
    dead: Sequence[DeadRecord]
    inside: list[CanonicalEvent]
    outside: list[tuple[CanonicalEvent, str]]
    fresh: list[CanonicalEvent]
    duplicates: list[CanonicalEvent]
    fresh_keys: set[dedup.Key]


@dataclass(frozen=True)
class RetryPolicy:
    initial_seconds: float = 0.2
    max_seconds: float = 30.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker._on_assigned(assigned)


class Worker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        sink: Sink,
        *,
        clock: Clock | None = None,
        group_id: str | None = None,
        formats: Mapping[str, VendorFormat] | None = None,
        health_host: str = "127.0.0.1",
        client_id: str | None = None,
        bounds: Bounds | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._sink = sink
        self._clock = clock or SystemClock()
        self._formats = formats or all_formats()
        self._group_id = group_id or settings.consumer_group
        self._batch = BatchPolicy(
            settings.batch_max_records, settings.batch_max_wait_ms, settings.batch_max_bytes
        )
        self._retry = RetryPolicy(max_seconds=settings.sink_retry_max_seconds)
        self._window = window.WindowPolicy(
            settings.window_hours, settings.future_skew_seconds, settings.window_hours_by_source
        )
        self._recent = dedup.RecentKeys(settings.dedup_cache_size)
        # A zero series from the start, so dashboards and alerts see "no errors" rather than no data.
        metrics.sink_errors.labels(sink.name)
        self._dlq = deadletter.DeadLetterProducer(settings)
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=self._group_id,
            client_id=client_id or "eventpipe-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_max_records,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=2 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self._health = HealthServer(health_host, settings.metrics_port, metrics, self.readiness)
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._revoking = False
        # Bumped when partitions are revoked: a batch prepared before then is not written.
        self._generation = 0
        self._joined = False
        self._sink_reachable = False  # the probe's last answer
        # The last write failed (SinkUnavailable) and none has succeeded since. Only a write clears
        # it: the probe's read still answers on a full or read-only disk, where every write fails.
        self._write_failing = False
        self._paused = False
        self._abandon_delay = self._retry.initial_seconds
        self._probe_task: asyncio.Task[None] | None = None
        self._last_lag = 0.0
        self.batches_committed = 0
        self._bounds = bounds
        # Bounded runs: where each partition resumes after a rebalance (what this run has stored), and
        # whether positions may be ahead of what is stored (a batch abandoned until the reassignment).
        self._resume_at: dict[TopicPartition, int] = dict(bounds.start) if bounds else {}
        self._unsettled = False
        self.caught_up = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def health_port(self) -> int:
        return self._health.port

    async def start(self) -> None:
        await self._health.start()
        await self._start_sink()
        await until_kafka_accepts(self._settings, self._stopping)
        await self._dlq.start()
        await self._consumer.start()
        self._consumer.subscribe([self._settings.raw_topic], listener=_Rebalance(self))
        self._probe_task = asyncio.create_task(self._probe_sink(), name="sink-probe")
        log.info("consumer_started", group=self._group_id, sink=self._sink.name, health_port=self.health_port)

    async def _start_sink(self) -> None:
        delay = self._retry.initial_seconds
        while True:
            try:
                await self._sink.start()
                self._sink_reachable = True
                return
            except SinkUnavailable as exc:
                log.warning("sink_unavailable_at_start", error=str(exc), retry_in=delay)
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry.max_seconds)

    def request_stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        # Leaving the group after the last commit: the partitions move on with nothing uncommitted.
        await self._consumer.stop()
        await self._dlq.stop()
        await self._sink.close()
        await self._health.stop()
        log.info("consumer_stopped", batches=self.batches_committed)

    def readiness(self) -> Readiness:
        sink_ok = self._sink_reachable and not self._write_failing
        ready = self._joined and sink_ok and not self._stopping.is_set()
        return Readiness(ready, {"group_joined": self._joined, "sink": sink_ok})

    async def _probe_sink(self) -> None:
        while True:
            ok = await self._sink.ping()
            if ok != self._sink_reachable:
                log.warning("sink_health_changed", healthy=ok)
            self._sink_reachable = ok
            self._metrics.ready.labels("consumer").set(1 if self.readiness().ready else 0)
            await asyncio.sleep(SINK_PROBE_SECONDS)

    # -- rebalance -----------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoked").inc()
        self._generation += 1
        self._revoking = True
        try:
            # Wait for the batch in hand: it is written and committed before the partitions go.
            async with self._lock:
                pass
        finally:
            self._revoking = False
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc()
        self._joined = True
        # Seeking here, before the first fetch, is what aiokafka's listener is for.
        for tp in assigned & self._resume_at.keys():
            self._consumer.seek(tp, self._resume_at[tp])
        self._unsettled = False
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until request_stop(), or for a bounded run until caught up (then `caught_up` is True)."""
        if self._bounds is not None:
            await self._run_bounded(self._bounds)
            return
        # The batch being written, and the task writing it: at most one at a time, so commits stay
        # in order; the next batch is collected and prepared meanwhile.
        writing: tuple[Prepared, asyncio.Task[bool]] | None = None
        try:
            while not self._stopping.is_set():
                records = await self._collect()
                if writing is None:
                    if records:
                        first = self._prepare(records, frozenset())
                        writing = first, asyncio.create_task(self._finish(first), name="batch")
                    await self._refresh_lag()
                    continue
                before, task = writing
                # The batch being written counts for dedup only while it may still be stored: one
                # prepared before a rebalance is dropped, and its events come again.
                current = before.generation == self._generation
                keys = before.fresh_keys if current else frozenset()
                prepared = self._prepare(records, keys) if records else None
                writing = None
                if not await task:
                    # Rewound to the abandoned batch, and to the one prepared after it: that was
                    # fetched later, maybe from partitions the abandoned one does not hold.
                    await self._retry_batch([*before.records, *records])
                elif prepared is not None:
                    writing = prepared, asyncio.create_task(self._finish(prepared), name="batch")
                await self._refresh_lag()
        finally:
            if writing is not None:
                await writing[1]  # the batch in hand is written and committed before the worker closes

    async def _run_bounded(self, bounds: Bounds) -> None:
        """One batch at a time: the end is judged from positions, which must not run ahead of what is
        stored."""
        while not self._stopping.is_set():
            records = await self._collect()
            if records and not await self._finish(self._prepare(records, frozenset())):
                self._abandoned()
                await self._retry_batch(records)
            await self._refresh_lag()
            if await self._reached_end(bounds):
                self.caught_up = True
                log.info("caught_up", group=self._group_id, batches=self.batches_committed)
                return

    def _abandoned(self) -> None:
        if self._bounds is None:
            return
        self._unsettled = True
        if not self._revoking and not self._stopping.is_set():
            # Not a rebalance (that would rewind to what is stored): the dead-letter topic refused the
            # batch. A bounded run stops rather than claim it caught up past records it did not store.
            log.error("bounded_run_stopped", reason="a batch could not be completed")
            self.request_stop()

    async def _retry_batch(self, records: Sequence[RawRecord]) -> None:
        """Fetch an abandoned batch again after a pause. The consumer's position is already past it, so
        without the rewind the next batch's commit would cover it and its dead letters would never be
        sent. Within a rebalance or a stop there is nothing to do: the partitions restart from the last
        commit."""
        if self._revoking or self._stopping.is_set():
            return
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
        self._pause()
        await self._idle(self._abandon_delay)
        self._resume()
        self._abandon_delay = min(self._abandon_delay * 2, self._retry.max_seconds)

    async def _reached_end(self, bounds: Bounds) -> bool:
        if self._unsettled or self._stopping.is_set():
            return False
        assigned = self._consumer.assignment()
        for tp, end in bounds.end.items():
            # Positions, not stored offsets: a position also moves past offsets holding no record.
            if tp not in assigned or await self._consumer.position(tp) < end:
                return False
        return True

    async def _collect(self) -> list[RawRecord]:
        """Records up to the batch's count and byte bounds, waiting at most its time bound once data
        flows. Records are taken from the fetched buffer a slice at a time, each slice sized to the
        byte budget left, so the byte bound is overshot by about one record."""
        records: list[RawRecord] = []
        size = 0
        policy = self._batch
        deadline = self._clock.monotonic() + policy.max_wait_ms / 1000
        while len(records) < policy.max_records and size < policy.max_bytes and not self._stopping.is_set():
            remaining_ms = int((deadline - self._clock.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            # As many records as the byte budget left holds at the average size so far.
            slice_ = 1 if not records else (policy.max_bytes - size) * len(records) // max(size, 1) + 1
            fetched = await self._consumer.getmany(
                timeout_ms=remaining_ms, max_records=min(slice_, policy.max_records - len(records))
            )
            for part in fetched.values():
                records.extend(part)
                size += sum(len(r.value or b"") for r in part)
            if not fetched and records:
                break
        return records

    def _prepare(self, records: Sequence[RawRecord], in_flight_keys: Container[dedup.Key]) -> Prepared:
        """The CPU part of a batch. `in_flight_keys`: the fresh keys of the batch being written, which
        are not remembered until its commit."""
        self._metrics.batch_size.observe(len(records))
        decoded = decode_records(records, self._formats)
        inside, outside = window.split(decoded.events, self._window)
        fresh, duplicates, keys = self._recent.split(inside, in_flight_keys)
        return Prepared(records, self._generation, decoded.dead, inside, outside, fresh, duplicates, keys)

    async def _finish(self, batch: Prepared) -> bool:
        """Write, acknowledge the dead letters, commit. False when the batch was abandoned: the caller
        rewinds to it (the consumer's position is already past it)."""
        async with self._lock:
            if batch.generation != self._generation:
                return True  # prepared before a rebalance: the partitions restart from the last commit
            try:
                await self._store(batch)
            except BatchAbandoned:
                log.warning("batch_abandoned", records=len(batch.records))
                return False
            return True

    async def _store(self, batch: Prepared) -> None:
        result, unstorable = await self._write(batch.fresh)
        letters = [
            deadletter.DeadLetter(
                value=d.record.value or b"",
                reason=d.reason,
                detail=d.detail,
                source=_header(d.record, "source") or "unknown",
                origin=f"{d.record.topic}/{d.record.partition}/{d.record.offset}",
            )
            for d in batch.dead
        ]
        letters += [
            deadletter.for_event(e, reason, f"outside the window ({reason})") for e, reason in batch.outside
        ]
        letters += [deadletter.for_event(e, "unstorable", detail) for e, detail in unstorable]
        await self._send_dead_letters(letters)
        offsets = _next_offsets(batch.records)
        await self._commit(offsets)
        if self._bounds is not None:
            self._resume_at.update(offsets)
        self._recent.remember(batch.fresh_keys)
        self.batches_committed += 1
        self._abandon_delay = self._retry.initial_seconds
        self._count(batch, result, unstorable)

    async def _write(
        self, events: list[CanonicalEvent]
    ) -> tuple[WriteResult, list[tuple[CanonicalEvent, str]]]:
        if not events:
            return WriteResult(), []
        delay = self._retry.initial_seconds
        while True:
            try:
                began = time.perf_counter()
                try:
                    result = await self._sink.write(events, self._clock.now())
                    unstorable: list[tuple[CanonicalEvent, str]] = []
                except UnstorableEvent:
                    result, unstorable = await self._write_one_by_one(events)
                self._metrics.sink_latency.labels(self._sink.name).observe(time.perf_counter() - began)
                self._write_failing = False
                self._resume()
                return result, unstorable
            except SinkUnavailable as exc:
                self._write_failing = True
                self._metrics.sink_errors.labels(self._sink.name).inc()
                log.warning("sink_unavailable", error=str(exc), retry_in=delay, events=len(events))
                if self._revoking or self._stopping.is_set():
                    self._resume()
                    raise BatchAbandoned from exc
                self._pause()
                await self._idle(delay)
                delay = min(delay * 2, self._retry.max_seconds)

    async def _write_one_by_one(
        self, events: list[CanonicalEvent]
    ) -> tuple[WriteResult, list[tuple[CanonicalEvent, str]]]:
        inserted: Counter[str] = Counter()
        unstorable: list[tuple[CanonicalEvent, str]] = []
        stored_at = self._clock.now()
        for event in events:
            try:
                one = await self._sink.write([event], stored_at)
            except UnstorableEvent as exc:
                unstorable.append((event, str(exc)))
                continue
            inserted.update(one.inserted_by_source)
        return WriteResult(dict(inserted)), unstorable

    def _pause(self) -> None:
        if not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True

    def _resume(self) -> None:
        if self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    async def _idle(self, seconds: float) -> None:
        """Wait while paused, still polling so the group does not think this member is stuck."""
        deadline = self._clock.monotonic() + seconds
        while not self._stopping.is_set() and not self._revoking:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))

    async def _send_dead_letters(self, letters: list[deadletter.DeadLetter]) -> None:
        try:
            await self._dlq.send_all(letters, self._clock.now())
        except KafkaError as exc:
            # The batch is stored but its rejects are not acknowledged: commit nothing, the batch
            # comes back and the sink's key absorbs the stored part.
            raise BatchAbandoned from exc
        for letter in letters:
            self._metrics.dead_letters.labels(letter.source, letter.reason).inc()

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
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

    def _count(
        self, batch: Prepared, result: WriteResult, unstorable: Sequence[tuple[CanonicalEvent, str]]
    ) -> None:
        dead, inside, outside, fresh = batch.dead, batch.inside, batch.outside, batch.fresh
        m = self._metrics.consumer_events
        now = self._clock.now()
        for source, n in Counter(e.source for e in batch.duplicates).items():
            m.labels(source, "duplicate").inc(n)
        for (source, reason), n in Counter((e.source, r) for e, r in outside).items():
            m.labels(source, reason).inc(n)
        unstorable_by_source = Counter(e.source for e, _ in unstorable)
        for source, n in Counter(e.source for e in fresh).items():
            stored = result.inserted_by_source.get(source, 0)
            m.labels(source, "stored").inc(stored)
            already = n - stored - unstorable_by_source.get(source, 0)
            if already > 0:
                m.labels(source, "duplicate").inc(already)
        for source, n in unstorable_by_source.items():
            m.labels(source, "invalid").inc(n)
        for source, n in Counter(_header(d.record, "source") or "unknown" for d in dead).items():
            m.labels(source, "invalid").inc(n)
        # labels() is a locked dict lookup: once per source and batch, not once per event.
        skew_of = {source: self._metrics.event_skew.labels(source) for source in {e.source for e in inside}}
        for event in inside:
            skew_of[event.source].observe(max(0.0, (event.received_at - event.occurred_at).total_seconds()))
        # One observation per request: its events share received_at and the commit, so their
        # latencies are one value (a batch of 200 would otherwise cost 200 observations).
        e2e = self._metrics.end_to_end
        for source, received_at in {(e.source, e.received_at) for e in fresh}:
            e2e.labels(source).observe(max(0.0, (now - received_at).total_seconds()))

    async def _refresh_lag(self) -> None:
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


def _next_offsets(records: Sequence[RawRecord]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record: what to commit."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = r.offset + 1
    return offsets


def _header(record: RawRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None
