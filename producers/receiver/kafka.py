"""The receiver's Kafka producer: idempotent, acks=all, one record per accepted request, each send
awaited so that a 2xx means durable (the records of one event-loop tick travel as one batch:
batching.py; with EVENTPIPE_KAFKA_TRANSACTIONAL_ID, in transactions: transactions.py). Connects in
the background so that the receiver can start (and answer 503) while Kafka is down, and recovers by
itself when it is back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.client import ConnectionGroup
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.kafka_diagnose import connection_problem
from pipeline.kafka_lz4 import use_fast_lz4
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from pipeline.topics import MESSAGE_BYTES_HEADROOM
from producers.receiver.batching import Batcher, Headers, KafkaUnavailable, TickBatcher
from producers.receiver.tally import Tally
from producers.receiver.transactions import TransactionBatcher

log = structlog.get_logger("eventpipe.receiver.kafka")

PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0
RECONNECT = BackoffPolicy(initial=0.2, cap=2.0)
# With transactions, a producer that has not started in this long is given up and tried again: its start
# waits for the coordinator to abort what its predecessor left open, which needs the cluster's quorum,
# and meanwhile no request can be written. Without them the producer given up goes on serving the
# partitions whose leaders answer while its successor starts (_abandon), however long that takes.
TRANSACTIONAL_START_TIMEOUT_SECONDS = 10.0


__all__ = ["KafkaUnavailable", "RecordProducer"]


class RecordProducer:
    def __init__(self, settings: Settings, metrics: Metrics, tally: Tally | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tally = tally
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._healthy = False
        self._retiring: AIOKafkaProducer | None = None  # given up, serving until its replacement starts
        self._replace = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()  # producers replaced, closing
        self._batcher: Batcher
        self._start_timeout: float | None = None
        # With transactions, a producer given up is replaced by one with the other id (ID, ID-b): the
        # coordinator must abort what the old id left open before that id can start again, and with a
        # hung broker among the transaction's partitions that waits for the broker's own request timeout
        # (30 s by default). The old id is fenced meanwhile in the background (_fence).
        base = settings.kafka_transactional_id
        self._transactional_ids = (base, f"{base}-b")
        self._generation = 0
        self._fencing: set[asyncio.Task[None]] = set()
        if settings.kafka_transactional_id:
            self._batcher = TransactionBatcher(
                settings.raw_topic,
                settings.produce_timeout_seconds,
                self._serving,
                self._abandon,
                self._delivered,
                self._transaction_ended,
            )
            self._start_timeout = TRANSACTIONAL_START_TIMEOUT_SECONDS
        else:
            self._batcher = TickBatcher(
                settings.raw_topic, settings.produce_timeout_seconds, self._abandon, self._delivered
            )

    @property
    def ready(self) -> bool:
        return self._producer is not None and self._healthy

    def _new_producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        """`transactional_id`: with transactions, the id to use, else the one after the last producer's."""
        s = self._settings
        if s.producer_compression == "lz4":
            use_fast_lz4()  # aiokafka's LZ4 HC costs more per small batch than the request around it
        transactional: dict[str, Any] = {}
        if s.kafka_transactional_id:
            if transactional_id is None:
                transactional_id = self._transactional_ids[self._generation % 2]
                self._generation += 1
            transactional = {
                "transactional_id": transactional_id,
                # How long a transaction left open by a worker that died (and whose id nobody takes up
                # again) holds back the consumers of its partitions; far above a transaction's own life.
                "transaction_timeout_ms": int(max(20.0, 4 * s.produce_timeout_seconds) * 1000),
            }
        return AIOKafkaProducer(
            **kafka_client_options(s),
            **transactional,
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
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for fencing in list(self._fencing):
            fencing.cancel()  # the coordinator aborts what is left open at the transaction timeout
        await asyncio.gather(*self._fencing, return_exceptions=True)
        if self._producer is not None:
            # flush what is in flight: every record awaited by a request is either acked or failed
            await self._producer.stop()
            self._producer = None

    async def _keep_connected(self) -> None:
        backoff = Backoff(RECONNECT)
        while True:
            if self._producer is None or self._producer is self._retiring:
                producer = self._new_producer()
                try:
                    async with asyncio.timeout(self._start_timeout):
                        await producer.start()
                except (KafkaError, TimeoutError) as exc:
                    await producer.stop()
                    # Not even a new producer can start: refuse at once rather than queue records,
                    # and close the one given up rather than let it retry its records later.
                    self._healthy = False
                    if self._producer is not None and self._producer is self._retiring:
                        self._close_when_settled(self._producer)
                        self._producer = None
                    problem = await connection_problem(self._settings) or str(exc) or "start timed out"
                    log.warning("kafka_connect_failed", error=problem, retry_in=backoff.next_delay)
                    await backoff.wait()
                    continue
                retired, self._producer = self._producer, producer
                self._healthy = True
                backoff.reset()
                log.info("kafka_connected", bootstrap=self._settings.kafka_bootstrap)
                if isinstance(self._batcher, TransactionBatcher):
                    self._batcher.producer_changed()
                    if self._generation == 1:
                        # A worker this one replaces may have died using the other id.
                        self._fence_in_background(self._transactional_ids[1])
                if retired is not None:
                    self._close_when_settled(retired)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL_SECONDS):
                    await self._replace.wait()
            self._replace.clear()
            await self._probe()

    async def _probe(self) -> None:
        """Every broker is asked at once, each on a connection of its own: on the one the producer writes
        on, the answer would queue behind a write waiting for its acks=all (a broker answers a
        connection's requests in order), and a healthy broker waiting for a lost follower to leave the
        in-sync set would look silent. Kafka is up while any broker answers: writes to the
        partitions a silent broker leads move elsewhere (batching.py), and a single broker's failure is
        the cluster's business (it moves the leaderships), not a reason to refuse every request."""
        producer = self._producer
        if producer is None:
            return
        client = producer.client
        nodes = sorted(int(b.nodeId) for b in client.cluster.brokers())
        if nodes:
            answers = await asyncio.gather(*(self._asks(client, node) for node in nodes))
            silent = frozenset(node for node, answered in zip(nodes, answers, strict=True) if not answered)
            healthy = len(silent) < len(nodes)
        else:  # no metadata yet: ask whichever bootstrap server answers
            silent = frozenset()
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                    healthy = bool(await client.force_metadata_update())
            except (KafkaError, TimeoutError):
                healthy = False
        if silent:
            # aiokafka refreshes its metadata after a connection error, but not while it retries a
            # broker it cannot reach (NodeNotReadyError): without this, a batch for a partition the
            # lost broker led would not learn its new leader before the produce timeout.
            client.force_metadata_update()
        if silent != self._batcher.silent_nodes:
            log.warning("kafka_brokers_silent", nodes=sorted(silent))
        self._batcher.silent_nodes = silent
        if healthy != self._healthy:
            log.warning("kafka_health_changed", healthy=healthy)
        self._healthy = healthy

    async def _asks(self, client: AIOKafkaClient, node: int) -> bool:
        """Whether the broker answers a metadata request for the raw topic alone in time (its size, and
        the broker's work, do not grow with the cluster's topic count)."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                request = MetadataRequest([self._settings.raw_topic])
                await client.send(node, request, group=ConnectionGroup.COORDINATION)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True

    def _serving(self) -> AIOKafkaProducer | None:
        """The producer a new transaction goes to: not one given up, whose transaction failed."""
        return None if self._producer is self._retiring else self._producer

    def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Replace a producer whose records could not be acknowledged in time. aiokafka's idempotent
        producer never expires a batch: it would deliver records whose requests were already answered
        503 once the broker is back. It goes on taking records (for the partitions whose leaders answer:
        batching.py) while its replacement starts, which takes seconds when the cluster has a broker that
        hangs; then it is closed once every request with a record in it has its answer."""
        if self._producer is not producer or self._retiring is producer:
            return  # another request already did it
        self._retiring = producer
        self._replace.set()
        log.warning("kafka_producer_abandoned")

    def _close_when_settled(self, producer: AIOKafkaProducer) -> None:
        closing = asyncio.get_running_loop().create_task(self._close_quietly(producer))
        self._closing.add(closing)  # the loop keeps only a weak reference to a task
        closing.add_done_callback(self._closing.discard)

    async def _close_quietly(self, producer: AIOKafkaProducer) -> None:
        """What is left in the producer once every request with a record in it has its answer belongs
        to requests answered 503: it is failed, so that closing does not retry it into the log."""
        with contextlib.suppress(Exception):
            await self._batcher.settled(producer)
            cast(Any, producer)._message_accumulator.fail_all(KafkaUnavailable("abandoned"))
            async with asyncio.timeout(10):
                await producer.stop()
        transactional_id = getattr(cast(Any, producer)._txn_manager, "transactional_id", None)
        if transactional_id:
            self._fence_in_background(transactional_id)

    def _fence_in_background(self, transactional_id: str) -> None:
        fencing = asyncio.get_running_loop().create_task(self._fence(transactional_id))
        self._fencing.add(fencing)
        fencing.add_done_callback(self._fencing.discard)

    async def _fence(self, transactional_id: str) -> None:
        """A producer with the given-up id, started only for its InitProducerId: the coordinator then
        aborts what that id left open (its records were answered 503), so the consumers, which read
        committed records only, do not wait for the transaction timeout on its partitions."""
        fencer = self._new_producer(transactional_id)
        try:
            async with asyncio.timeout(self._settings.produce_timeout_seconds * 8):
                await fencer.start()
        except (KafkaError, TimeoutError) as exc:
            log.warning(
                "kafka_fence_failed", transactional_id=transactional_id, error=str(exc) or "timed out"
            )
        finally:
            with contextlib.suppress(Exception):
                await fencer.stop()

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

    def _transaction_ended(self, outcome: str) -> None:
        self._metrics.transactions.labels(outcome=outcome).inc()

    def _delivered(self, seconds: float, records: int) -> None:
        """Each record of a delivered batch waited as long as its batch."""
        if self._tally is not None:
            self._tally.observe(self._metrics.produce_latency, (), seconds, records)
            self._tally.observe(self._metrics.produce_batch_records, (), records)
            return
        for _ in range(records):
            self._metrics.produce_latency.observe(seconds)
        self._metrics.produce_batch_records.observe(records)
