"""The consumer worker: a member of the group on the raw topic, and the loop. It collects a batch
(fetch.py) and hands it to the strategy of the current assignment (strategy.py), which prepares it
(batch.py) while the one before it goes through its checkpoint (checkpoint.py: write, dead letters,
commit, dedup). A fresh strategy per assignment, closed and waited for on revoke, so the batch in
hand is committed before the partitions go. When the run ends is the stop rule's (stop_rule.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from consumers import dedup, window
from consumers.batch import Outcome, Prepare
from consumers.checkpoint import Checkpoint
from consumers.deadletter import DeadLetterProducer
from consumers.fetch import BatchPolicy, collect
from consumers.health import HealthServer, Readiness
from consumers.kafka_wait import until_kafka_accepts
from consumers.partitions import Partitions
from consumers.sinks.base import Sink
from consumers.stop_rule import StopRule, UntilStopped
from consumers.strategy import Steps, Strategy, Totals
from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.clock import Clock, SystemClock
from pipeline.errors import SinkUnavailable
from pipeline.formats import all_formats
from pipeline.formats.base import VendorFormat
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.settings import Settings

log = structlog.get_logger("eventpipe.consumer")

SINK_PROBE_SECONDS = 1.0


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
        stop_rule: StopRule | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._sink = sink
        self._clock = clock or SystemClock()
        self._group_id = group_id or settings.consumer_group
        self._batch = BatchPolicy.from_settings(settings)
        self._retry = BackoffPolicy(initial=0.2, cap=settings.sink_retry_max_seconds)
        self._rule = stop_rule or UntilStopped()
        # A zero series from the start, so dashboards and alerts see "no errors" rather than no data.
        metrics.sink_errors.labels(sink.name)
        self._dlq = DeadLetterProducer(settings)
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=self._group_id,
            client_id=client_id or "eventpipe-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Records of a receiver's aborted transaction (its requests were answered 503) are skipped,
            # and those of one under way wait for its commit: producers/receiver/transactions.py.
            isolation_level="read_committed",
            max_poll_records=settings.batch_max_records,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=2 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # A broker that hangs holds the fetches of the partitions it led until the request times
            # out, and the consumer learns their new leaders from its next metadata refresh: both far
            # sooner than aiokafka's 40 s and 5 min. Every request shares the timeout, so it stays
            # above the JoinGroup's wait (the rebalance timeout, the session timeout by default).
            request_timeout_ms=15_000,
            metadata_max_age_ms=5_000,
        )
        self._health = HealthServer(health_host, settings.metrics_port, metrics, self.readiness)
        self._stopping = asyncio.Event()
        self._partitions = Partitions(self._consumer, metrics, self._clock)
        recent = dedup.RecentKeys(settings.dedup_cache_size)
        self._checkpoint = Checkpoint(
            sink, self._dlq, self._partitions, recent, metrics, self._clock, self._retry
        )
        self._totals = Totals()
        policy = window.WindowPolicy(
            settings.window_hours, settings.future_skew_seconds, settings.window_hours_by_source
        )
        self._steps = Steps(
            prepare=Prepare(formats or all_formats(), policy, recent, metrics),
            checkpoint=self._checkpoint,
            partitions=self._partitions,
            rule=self._rule,
            refetch=Backoff(self._retry),
            stopping=self._stopping,
            totals=self._totals,
        )
        self._strategy: Strategy | None = None  # None while no partitions are assigned
        self._joined = False
        self._sink_reachable = False  # the probe's last answer
        self._probe_task: asyncio.Task[None] | None = None
        self.caught_up = False

    @property
    def batches_committed(self) -> int:
        return self._totals.batches

    @property
    def outcome(self) -> Outcome:
        """Every committed batch's outcome, added up."""
        return self._totals.outcome

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
        backoff = Backoff(self._retry)
        while True:
            try:
                await self._sink.start()
                self._sink_reachable = True
                return
            except SinkUnavailable as exc:
                log.warning("sink_unavailable_at_start", error=str(exc), retry_in=backoff.next_delay)
                if self._stopping.is_set():
                    raise
                await backoff.wait()

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
        sink_ok = self._sink_reachable and not self._checkpoint.write_failing
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
        strategy = self._strategy
        if strategy is not None:
            # The batch in hand is written and committed before the partitions go.
            strategy.close()
            await strategy.join()
            self._strategy = None
        self._partitions.forget_lag(revoked)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc()
        self._joined = True
        # Seeking here, before the first fetch, is what aiokafka's listener is for.
        for tp, offset in self._rule.on_assigned(assigned).items():
            self._consumer.seek(tp, offset)
        self._strategy = self._steps.create()
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until request_stop(), or until the stop rule sees the end (then `caught_up` is True)."""
        try:
            while not self._stopping.is_set():
                records = await collect(self._consumer, self._batch, self._clock, self._stopping)
                strategy = self._strategy
                if strategy is not None:
                    await (strategy.submit(records) if records else strategy.flush())
                await self._partitions.report_lag()
                if not self._stopping.is_set() and await self._rule.reached_end(self._partitions):
                    self.caught_up = True
                    log.info("caught_up", group=self._group_id, batches=self.batches_committed)
                    return
        finally:
            if self._strategy is not None:
                await self._strategy.join()  # the batch in hand is committed before the worker closes
