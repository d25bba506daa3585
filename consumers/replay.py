"""`eventpipe replay`: the raw topic re-read from a chosen point into the sink, under a consumer group
of its own, by the same worker pipeline (decode → window → dedup → sink → dead letters → commit). The
sink's key makes it idempotent. It ends once caught up to the high watermarks taken at its start."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from consumers import start_position
from consumers.lookup import KafkaLookup
from consumers.migrate import redact
from consumers.run import drive, run_on_uvloop
from consumers.sinks import open_sink
from consumers.status.render import table
from consumers.stop_rule import Bounds, UntilCaughtUp
from consumers.worker import Worker
from pipeline.errors import ConfigError
from pipeline.kafka_diagnose import connection_problem
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.settings import Settings


@dataclass(frozen=True)
class Summary:
    topic: str
    group_id: str
    start: str
    sink: str  # password redacted
    partitions: int
    planned_records: int  # from the start offsets to the high watermarks taken at the start
    caught_up: bool
    records_read: int = 0
    events: dict[str, int] = field(default_factory=dict)  # by outcome
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason

    def text(self) -> str:
        rows: list[list[object]] = [
            ["records read", self.records_read],
            ["events stored", self.events.get("stored", 0)],
            ["duplicates", self.events.get("duplicate", 0)],
            ["late", self.events.get("late", 0)],
            ["future", self.events.get("future", 0)],
            ["invalid", self.events.get("invalid", 0)],
            ["dead-lettered", sum(self.dead_letters.values())],
        ]
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dead_letters.items()))
        ending = (
            "caught up to the high watermarks taken at the start"
            if self.caught_up
            else "STOPPED before catching up: run it again (replay is idempotent)"
        )
        return "\n".join(
            [
                f"replay of {self.topic} from {self.start} into {self.sink} (group {self.group_id})",
                f"{self.planned_records} records to read in {self.partitions} partitions",
                *("  " + line for line in table(["", ""], rows)[1:]),
                *([f"dead letters by reason: {reasons}"] if reasons else []),
                ending,
            ]
        )


async def plan(lookup: KafkaLookup, topic: str, spec: start_position.StartSpec) -> Bounds:
    """Start offsets for `spec` and the high watermarks now, per partition of the topic."""
    parts = (await lookup.partitions([topic])).get(topic)
    if not parts:
        raise ConfigError(f"topic {topic} does not exist")
    first = await lookup.first_offsets(parts)
    next_ = await lookup.next_offsets(parts)
    at_time = await lookup.offsets_at(parts, spec.at) if isinstance(spec, start_position.AtTime) else None
    return Bounds(start_position.resolve(spec, first, next_, at_time), next_)


async def replay(settings: Settings, spec: start_position.StartSpec, group_id: str | None = None) -> Summary:
    group = group_id or f"{settings.consumer_group}-replay"
    lookup = KafkaLookup(kafka_client_options(settings))
    try:
        await lookup.start()
        bounds = await plan(lookup, settings.raw_topic, spec)
    finally:
        await lookup.close()
    planned = sum(end - bounds.start[tp] for tp, end in bounds.end.items())
    summary = Summary(
        settings.raw_topic, group, str(spec), redact(settings.sink), len(bounds.end), planned, True
    )
    if planned == 0:
        return summary
    # Port 0: a replay runs beside the consumers, whose /metrics port is taken.
    worker = Worker(
        settings.replace(metrics_port=0),
        Metrics(CollectorRegistry()),
        open_sink(settings.sink),
        group_id=group,
        client_id="eventpipe-replay",
        stop_rule=UntilCaughtUp(bounds),
    )
    await drive(worker)
    done = worker.outcome  # every committed batch's, added up
    return dataclasses.replace(
        summary,
        caught_up=worker.caught_up,
        records_read=done.records,
        events=done.by_outcome(),
        dead_letters=done.by_reason(),
    )


def main(settings: Settings, start: str, group_id: str | None) -> int:
    try:
        spec = start_position.parse(start, datetime.now(UTC))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run_on_uvloop(replay(settings, spec, group_id))
    except (KafkaError, TimeoutError) as exc:
        problem = run_on_uvloop(connection_problem(settings)) or exc
        print(f"error: Kafka at {settings.kafka_bootstrap}: {problem}", file=sys.stderr)
        return 1
    print(summary.text())
    return 0 if summary.caught_up else 1
