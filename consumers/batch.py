"""A batch of records: prepared (decode → window → dedup, the CPU part, done while the batch before
it is written) and, once committed, counted: its Outcome, which the metrics and replay's summary
are made from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition

from consumers import dedup, window
from consumers.deadletter import DeadLetter
from consumers.decode import DeadRecord, RawRecord, decode_records, header
from consumers.partitions import next_offsets
from consumers.sinks.base import WriteResult
from pipeline.canonical import CanonicalEvent
from pipeline.formats.base import VendorFormat
from pipeline.metrics import Metrics


@dataclass(frozen=True)
class Batch:
    """A batch decoded and sorted, ready for its checkpoint."""

    records: Sequence[RawRecord]
    offsets: Mapping[TopicPartition, int]  # per partition, the offset after its last record
    dead: Sequence[DeadRecord]  # records that could not be decoded at all
    inside: list[CanonicalEvent]  # the events inside the window
    outside: list[tuple[CanonicalEvent, str]]  # (event, "late" | "future")
    fresh: list[CanonicalEvent]  # inside, and not known to dedup: what the sink is asked to write
    duplicates: list[CanonicalEvent]
    fresh_keys: set[dedup.Key]  # remembered by dedup once the batch is committed


class Prepare:
    """The steps before the sink, for one batch at a time."""

    def __init__(
        self,
        formats: Mapping[str, VendorFormat],
        policy: window.WindowPolicy,
        recent: dedup.RecentKeys,
        metrics: Metrics,
    ) -> None:
        self._formats = formats
        self._policy = policy
        self._recent = recent
        self._metrics = metrics

    def __call__(self, records: Sequence[RawRecord], in_flight_keys: Container[dedup.Key]) -> Batch:
        """`in_flight_keys`: the fresh keys of the batch being written, not remembered until its
        commit, so that an event repeated in the next batch counts as the duplicate it is."""
        self._metrics.batch_size.observe(len(records))
        decoded = decode_records(records, self._formats)
        inside, outside = window.split(decoded.events, self._policy)
        fresh, duplicates, keys = self._recent.split(inside, in_flight_keys)
        return Batch(records, next_offsets(records), decoded.dead, inside, outside, fresh, duplicates, keys)


@dataclass(frozen=True)
class Outcome:
    """What committed batches did, added up: records read, events by (source, outcome) and dead
    letters by (source, reason). A key may hold 0: its metric series then exists at 0."""

    records: int = 0
    events: Mapping[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.records + other.records,
            _sum(self.events, other.events),
            _sum(self.dead_letters, other.dead_letters),
        )

    def by_outcome(self) -> dict[str, int]:
        return _by_second(self.events)

    def by_reason(self) -> dict[str, int]:
        return _by_second(self.dead_letters)


def count(
    batch: Batch,
    result: WriteResult,
    unstorable: Sequence[tuple[CanonicalEvent, str]],
    letters: Iterable[DeadLetter],
) -> Outcome:
    """The outcome of a committed batch. Fresh events the sink did not insert (and that were not
    unstorable) were already stored: duplicates found by the sink's key."""
    # Counted by source first (Counter's loop runs in C), then filed under the outcome.
    events: Counter[tuple[str, str]] = Counter()
    for source, n in Counter(e.source for e in batch.duplicates).items():
        events[source, "duplicate"] += n
    for (source, reason), n in Counter((e.source, r) for e, r in batch.outside).items():
        events[source, reason] += n
    unstorable_by_source = Counter(e.source for e, _ in unstorable)
    for source, n in Counter(e.source for e in batch.fresh).items():
        stored = result.inserted_by_source.get(source, 0)
        events[source, "stored"] += stored
        already = n - stored - unstorable_by_source.get(source, 0)
        if already > 0:
            events[source, "duplicate"] += already
    for source, n in unstorable_by_source.items():
        events[source, "invalid"] += n
    for source, n in Counter(header(d.record, "source") or "unknown" for d in batch.dead).items():
        events[source, "invalid"] += n
    dead_letters = Counter((letter.source, letter.reason) for letter in letters)
    return Outcome(len(batch.records), dict(events), dict(dead_letters))


def observe(metrics: Metrics, batch: Batch, outcome: Outcome, now: datetime) -> None:
    """The batch's counters, its events' skew and its requests' end-to-end latency, once committed."""
    for (source, name), n in outcome.events.items():
        metrics.consumer_events.labels(source, name).inc(n)
    for (source, reason), n in outcome.dead_letters.items():
        metrics.dead_letters.labels(source, reason).inc(n)
    # labels() is a locked dict lookup: once per source and batch, not once per event.
    skew_of = {source: metrics.event_skew.labels(source) for source in {e.source for e in batch.inside}}
    for event in batch.inside:
        skew_of[event.source].observe(max(0.0, (event.received_at - event.occurred_at).total_seconds()))
    # One observation per request: its events share received_at and the commit, so their
    # latencies are one value (a batch of 200 would otherwise cost 200 observations).
    e2e = metrics.end_to_end
    for source, received_at in {(e.source, e.received_at) for e in batch.fresh}:
        e2e.labels(source).observe(max(0.0, (now - received_at).total_seconds()))


def _sum(a: Mapping[tuple[str, str], int], b: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    total = dict(a)
    for key, n in b.items():
        total[key] = total.get(key, 0) + n
    return total


def _by_second(table: Mapping[tuple[str, str], int]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for (_, name), n in table.items():
        totals[name] += n
    return dict(totals)
