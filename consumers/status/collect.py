"""Collecting `eventpipe status` from the broker and the sink. Whatever fails is kept in the snapshot
as a message next to what could be learnt, so the command always has something to show."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumers.lookup import KafkaLookup
from consumers.migrate import redact
from consumers.sinks import open_sink
from consumers.status import snapshot as snap
from pipeline.clock import Clock, SystemClock
from pipeline.errors import PipelineError, SinkUnavailable
from pipeline.kafka_diagnose import connection_problem
from pipeline.kafka_security import kafka_client_options
from pipeline.settings import Settings

DEAD_LETTER_WINDOW = timedelta(hours=1)
# Reading dead letters for their reason header stops here; the count itself comes from offsets.
REASON_READ_LIMIT = 10_000
_BROKER_FAILURES = (KafkaError, TimeoutError, OSError)


async def collect(
    settings: Settings,
    *,
    group_id: str | None = None,
    clock: Clock | None = None,
    timeout_seconds: float = 10.0,
) -> snap.Snapshot:
    now = (clock or SystemClock()).now()
    sink = asyncio.create_task(sink_rows(settings.sink, timeout_seconds))
    broker, topics, group, dead = await _from_broker(
        settings, group_id or settings.consumer_group, now - DEAD_LETTER_WINDOW, timeout_seconds
    )
    return snap.Snapshot(now, broker, await sink, topics, group, dead)


async def sink_rows(url: str, timeout_seconds: float) -> snap.SinkRows:
    where = redact(url)
    try:
        sink = open_sink(url, create=False)
    except ValueError as exc:
        return snap.SinkRows(where, False, error=str(exc))
    try:
        async with asyncio.timeout(timeout_seconds):
            return snap.SinkRows(where, True, rows=await sink.count())
    except (SinkUnavailable, TimeoutError) as exc:
        return snap.SinkRows(where, False, error=_message(exc, timeout_seconds))
    finally:
        await sink.close()


async def _from_broker(
    settings: Settings, group_id: str, since: datetime, timeout_seconds: float
) -> tuple[snap.Broker, list[snap.Topic], snap.Group | None, snap.DeadLetters | None]:
    bootstrap = settings.kafka_bootstrap
    lookup = KafkaLookup(kafka_client_options(settings), timeout_seconds=timeout_seconds)
    try:
        await lookup.start()
        # A bound on the whole: aiokafka's offset look-ups retry on stale metadata without limit.
        async with asyncio.timeout(3 * timeout_seconds):
            cluster = await lookup.cluster()
            raw, dlq = settings.raw_topic, settings.dlq_topic
            parts = await lookup.partitions([raw, dlq])
            retention = await lookup.retention_ms(sorted(parts))
            every = [tp for tps in parts.values() for tp in tps]
            first = await lookup.first_offsets(every)
            next_ = await lookup.next_offsets(every)
            topics = [
                snap.topic(name, role, first, _only(next_, parts[name]), retention.get(name))
                if name in parts
                else snap.Topic(name, role, exists=False)
                for name, role in ((raw, "raw"), (dlq, "dlq"))
            ]
            group = await _group(lookup, group_id, raw, parts.get(raw, []), first, next_, timeout_seconds)
            dead = None
            if dlq in parts:
                dead = await _dead_letters(lookup, parts[dlq], next_, since, timeout_seconds)
    except _BROKER_FAILURES as exc:
        problem = await connection_problem(settings, timeout_seconds) or _message(exc, timeout_seconds)
        return snap.Broker(bootstrap, False, error=problem), [], None, None
    finally:
        await lookup.close()
    return snap.Broker(bootstrap, True, cluster), topics, group, dead


async def _group(
    lookup: KafkaLookup,
    group_id: str,
    topic: str,
    raw: list[TopicPartition],
    first: Mapping[TopicPartition, int],
    next_: Mapping[TopicPartition, int],
    timeout_seconds: float,
) -> snap.Group:
    try:
        description = await lookup.group(group_id)
        committed = await lookup.committed(group_id, raw)
    except KafkaError as exc:
        return snap.Group(group_id, topic, error=_message(exc, timeout_seconds))
    rows = snap.lag(first, _only(next_, raw), committed)
    return snap.Group(group_id, topic, description, rows, sum(r.lag for r in rows))


async def _dead_letters(
    lookup: KafkaLookup,
    dlq: list[TopicPartition],
    next_: Mapping[TopicPartition, int],
    since: datetime,
    timeout_seconds: float,
) -> snap.DeadLetters:
    try:
        at = await lookup.offsets_at(dlq, since)
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp in dlq:
            hit = at.get(tp)
            ranges[tp] = (next_[tp] if hit is None else hit, next_[tp])
        reasons = await lookup.count_header(ranges, "reason", REASON_READ_LIMIT)
    except KafkaError as exc:
        return snap.DeadLetters(since, error=_message(exc, timeout_seconds))
    count = sum(end - start for start, end in ranges.values())
    return snap.DeadLetters(since, count, reasons.counts, reasons.complete)


def _only(offsets: Mapping[TopicPartition, int], tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    return {tp: offsets[tp] for tp in tps}


def _message(exc: BaseException, timeout_seconds: float) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {timeout_seconds:g} s"
    text = str(exc)
    # Our errors speak for themselves; aiokafka's already start with their class name.
    if isinstance(exc, PipelineError) or text.startswith(type(exc).__name__):
        return text
    return f"{type(exc).__name__}: {text}"
