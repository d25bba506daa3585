"""A prepared batch's way out, in an order that never commits past what is stored:

1. write its fresh events to the sink in one transaction (retrying, partitions paused, while the
   sink is down);
2. send its dead letters and wait until Kafka has acknowledged them;
3. commit its offsets, for the partitions still held;
4. remember its keys in dedup (only now: a batch that never commits must not make its events look
   like duplicates when they come again);
5. count it: the Outcome.

A step failing before the commit abandons the batch (BatchAbandoned): nothing is committed, Kafka
redelivers it, and the sink's key absorbs whatever part was stored."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import structlog
from aiokafka.errors import KafkaError

from consumers import deadletter
from consumers.batch import Batch, Outcome, count, observe
from consumers.dedup import RecentKeys
from consumers.partitions import Partitions
from consumers.sinks.base import Sink, WriteResult
from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.canonical import CanonicalEvent
from pipeline.clock import Clock
from pipeline.errors import SinkUnavailable, UnstorableEvent
from pipeline.metrics import Metrics

log = structlog.get_logger("eventpipe.consumer")

Unstorable = list[tuple[CanonicalEvent, str]]


class BatchAbandoned(Exception):
    """The batch is given up uncommitted: the sink stayed down into a rebalance or a stop, or the
    dead-letter topic refused its rejects."""


class Checkpoint:
    def __init__(
        self,
        sink: Sink,
        dead_letters: deadletter.DeadLetterProducer,
        partitions: Partitions,
        recent: RecentKeys,
        metrics: Metrics,
        clock: Clock,
        retry: BackoffPolicy,
    ) -> None:
        self._sink = sink
        self._dlq = dead_letters
        self._partitions = partitions
        self._recent = recent
        self._metrics = metrics
        self._clock = clock
        self._retry = retry
        # The last write failed and none has succeeded since. Only a write clears it: the sink's
        # probe still answers on a full or read-only disk, where every write fails.
        self.write_failing = False

    async def run(self, batch: Batch, give_up: Callable[[], bool]) -> Outcome:
        """The five steps. `give_up()` turns true on a rebalance or a stop: the write stops retrying
        and the batch is abandoned (raises BatchAbandoned)."""
        result, unstorable = await self._write(batch.fresh, give_up)  # 1
        letters = [deadletter.for_record(d) for d in batch.dead]
        letters += [
            deadletter.for_event(e, reason, f"outside the window ({reason})") for e, reason in batch.outside
        ]
        letters += [deadletter.for_event(e, "unstorable", detail) for e, detail in unstorable]
        try:
            await self._dlq.send_all(letters, self._clock.now())  # 2
        except KafkaError as exc:
            # Stored but its rejects not acknowledged: commit nothing, the batch comes back.
            raise BatchAbandoned from exc
        await self._partitions.commit(batch.offsets)  # 3
        self._recent.remember(batch.fresh_keys)  # 4
        outcome = count(batch, result, unstorable, letters)  # 5
        observe(self._metrics, batch, outcome, self._clock.now())
        return outcome

    async def _write(
        self, events: list[CanonicalEvent], give_up: Callable[[], bool]
    ) -> tuple[WriteResult, Unstorable]:
        if not events:
            return WriteResult(), []
        backoff = Backoff(self._retry)
        while True:
            try:
                began = time.perf_counter()
                try:
                    result = await self._sink.write(events, self._clock.now())
                    unstorable: Unstorable = []
                except UnstorableEvent:
                    result, unstorable = await self._write_one_by_one(events)
                self._metrics.sink_latency.labels(self._sink.name).observe(time.perf_counter() - began)
                self.write_failing = False
                self._partitions.resume()
                return result, unstorable
            except SinkUnavailable as exc:
                self.write_failing = True
                self._metrics.sink_errors.labels(self._sink.name).inc()
                log.warning(
                    "sink_unavailable", error=str(exc), retry_in=backoff.next_delay, events=len(events)
                )
                if give_up():
                    self._partitions.resume()
                    raise BatchAbandoned from exc
                self._partitions.pause()
                await self._partitions.idle(backoff.step(), until=give_up)

    async def _write_one_by_one(self, events: list[CanonicalEvent]) -> tuple[WriteResult, Unstorable]:
        """After the sink refused an event's own data: each event alone, to find the unstorable ones
        (dead-lettered) and store the rest."""
        inserted: Counter[str] = Counter()
        unstorable: Unstorable = []
        stored_at = self._clock.now()
        for event in events:
            try:
                one = await self._sink.write([event], stored_at)
            except UnstorableEvent as exc:
                unstorable.append((event, str(exc)))
                continue
            inserted.update(one.inserted_by_source)
        return WriteResult(dict(inserted)), unstorable
