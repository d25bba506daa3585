"""The receiver's Kafka producer: idempotent, acks=all, one record per accepted request, each send
awaited so that a 2xx means durable (the records of one event-loop tick travel as one batch:
batching.py). Connects in the background so that the receiver can start (and
answer 503) while Kafka is down, and recovers by itself when it is back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.kafka_diagnose import connection_problem
from pipeline.kafka_lz4 import use_fast_lz4
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from pipeline.topics import MESSAGE_BYTES_HEADROOM
from producers.receiver.batching import Headers, KafkaUnavailable, TickBatcher
from producers.receiver.tally import Tally

log = structlog.get_logger("eventpipe.receiver.kafka")

PROBE_INTERVAL_SECONDS = 1.0
RECONNECT = BackoffPolicy(initial=0.2, cap=2.0)


__all__ = ["KafkaUnavailable", "RecordProducer"]


class RecordProducer:
    def __init__(self, settings: Settings, metrics: Metrics, tally: Tally | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tally = tally
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._healthy = False
        self._batcher = TickBatcher(
            settings.raw_topic, settings.produce_timeout_seconds, self._abandon, self._delivered
        )

    @property
    def ready(self) -> bool:
        return self._producer is not None and self._healthy

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        if s.producer_compression == "lz4":
            use_fast_lz4()  # aiokafka's LZ4 HC costs more per small batch than the request around it
        return AIOKafkaProducer(
            **kafka_client_options(s),
            enable_idempotence=True,
            acks="all",
            linger_ms=s.producer_linger_ms,
            compression_type=None if s.producer_compression == "none" else s.producer_compression,
            max_request_size=s.max_body_bytes + MESSAGE_BYTES_HEADROOM,
            # The batch expires (and its future fails) before the receiver's own deadline, so a 503
            # is almost always a record that was not written.
            request_timeout_ms=int(s.produce_timeout_seconds * 1000),
            max_batch_size=256 * 1024,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="kafka-producer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._batcher.close()
        if self._producer is not None:
            # flush what is in flight: every record awaited by a request is either acked or failed
            await self._producer.stop()
            self._producer = None

    async def _keep_connected(self) -> None:
        backoff = Backoff(RECONNECT)
        while True:
            if self._producer is None:
                producer = self._new_producer()
                try:
                    await producer.start()
                except KafkaError as exc:
                    await producer.stop()
                    problem = await connection_problem(self._settings) or str(exc)
                    log.warning("kafka_connect_failed", error=problem, retry_in=backoff.next_delay)
                    await backoff.wait()
                    continue
                self._producer = producer
                self._healthy = True
                backoff.reset()
                log.info("kafka_connected", bootstrap=self._settings.kafka_bootstrap)
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            await self._probe()

    async def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            async with asyncio.timeout(2.0):
                # A metadata request for the raw topic alone: the broker answers it in the same way
                # as for all topics, but its size (and the broker's work) does not grow with the
                # cluster's topic count, every second in every worker.
                client = producer.client
                await client.add_topic(self._settings.raw_topic)
                healthy = bool(await client.force_metadata_update())
        except (KafkaError, TimeoutError):
            healthy = False
        if healthy != self._healthy:
            log.warning("kafka_health_changed", healthy=healthy)
        self._healthy = healthy

    def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Give up a producer whose records could not be acknowledged in time. aiokafka's idempotent
        producer never expires a batch: it would deliver records whose requests were already answered
        503 once the broker is back. Failing its pending batches makes a 503 mean "not written" (short
        of a write whose acknowledgement was lost on the wire); a fresh producer takes over."""
        if self._producer is not producer:
            return  # another request already did it
        self._producer = None
        self._healthy = False
        accumulator = cast(Any, producer)._message_accumulator  # no public API for this
        accumulator.fail_all(KafkaUnavailable("abandoned after a produce timeout"))
        asyncio.get_running_loop().create_task(self._close_quietly(producer))
        log.warning("kafka_producer_abandoned")

    @staticmethod
    async def _close_quietly(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await producer.stop()

    async def send(self, value: bytes, meta: RecordMeta, key: bytes | None = None) -> None:
        """Write one record and wait for the broker's acknowledgement. Raises KafkaUnavailable."""
        await self.send_with_headers(value, meta.headers(), key)

    def send_with_headers(
        self, value: bytes, headers: Headers, key: bytes | None = None
    ) -> asyncio.Future[None]:
        """The record goes into this tick's batch; the future is its acknowledgement (KafkaUnavailable
        when the batch was not written in produce_timeout_seconds)."""
        producer = self._producer
        if producer is None or not self._healthy:
            # Refuse at once rather than queue a record that may outlive its request.
            raise KafkaUnavailable("not connected to Kafka")
        return self._batcher.add(producer, value, headers, key)

    def _delivered(self, seconds: float, records: int) -> None:
        """Each record of a delivered batch waited as long as its batch."""
        if self._tally is not None:
            self._tally.observe(self._metrics.produce_latency, (), seconds, records)
            return
        for _ in range(records):
            self._metrics.produce_latency.observe(seconds)
