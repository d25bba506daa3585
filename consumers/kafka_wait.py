"""Before a consumer joins its group: wait until Kafka accepts this client, saying why it does not
(credentials, certificates, protocol, unreachable) and retrying with a capped backoff. The process
stays up and not ready meanwhile, rather than exiting into a restart loop that repeats the error."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka.errors import KafkaConnectionError

from pipeline.backoff import Backoff, BackoffPolicy
from pipeline.kafka_diagnose import connection_problem
from pipeline.settings import Settings

log = structlog.get_logger("eventpipe.consumer")

RETRY = BackoffPolicy(initial=0.5, cap=30.0)


async def until_kafka_accepts(settings: Settings, stopping: asyncio.Event) -> None:
    """Returns once a bootstrap server accepts the client; raises KafkaConnectionError if a stop is
    requested first (as the sink's start does)."""
    backoff = Backoff(RETRY)
    while True:
        problem = await connection_problem(settings)
        if problem is None:
            return
        log.error("kafka_not_accepting", problem=problem, retry_in=backoff.next_delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff.step())
        if stopping.is_set():
            raise KafkaConnectionError(f"stopped while waiting for Kafka: {problem}")
