"""Dead letters: what can never be stored goes to the dead-letter topic with its reason, the original
bytes and where it came from, and is acknowledged by Kafka before the offsets move on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaProducer

from consumers.decode import DeadRecord, header
from pipeline.canonical import CanonicalEvent
from pipeline.clock import to_epoch_ms
from pipeline.kafka_security import kafka_client_options
from pipeline.settings import Settings
from pipeline.topics import MESSAGE_BYTES_HEADROOM


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    reason: str  # late, future, undecodable, unstorable
    detail: str
    source: str
    tenant: str = ""
    event_type: str = ""
    event_id: str = ""
    received_at_ms: int = 0
    origin: str = ""  # topic/partition/offset of the raw record

    def headers(self, dead_at: datetime) -> list[tuple[str, bytes]]:
        return [
            ("reason", self.reason.encode()),
            ("detail", self.detail.encode()[:1024]),
            ("source", self.source.encode()),
            ("tenant", self.tenant.encode()),
            ("event_type", self.event_type.encode()),
            ("event_id", self.event_id.encode()),
            ("received_at", str(self.received_at_ms).encode()),
            ("origin", self.origin.encode()),
            ("dead_at", str(to_epoch_ms(dead_at)).encode()),
        ]


def for_event(event: CanonicalEvent, reason: str, detail: str, origin: str = "") -> DeadLetter:
    return DeadLetter(
        value=event.raw,
        reason=reason,
        detail=detail,
        source=event.source,
        tenant=event.tenant,
        event_type=event.event_type,
        event_id=event.event_id,
        received_at_ms=to_epoch_ms(event.received_at),
        origin=origin,
    )


def for_record(dead: DeadRecord) -> DeadLetter:
    """A whole record that could not be decoded, under the source its headers name."""
    record = dead.record
    return DeadLetter(
        value=record.value or b"",
        reason=dead.reason,
        detail=dead.detail,
        source=header(record, "source") or "unknown",
        origin=f"{record.topic}/{record.partition}/{record.offset}",
    )


class DeadLetterProducer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(
            **kafka_client_options(settings),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=settings.max_body_bytes + MESSAGE_BYTES_HEADROOM,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_all(self, letters: Sequence[DeadLetter], dead_at: datetime) -> None:
        """Send every letter and wait until Kafka has acknowledged all of them; raises on failure, and
        the caller then commits nothing."""
        if not letters:
            return
        futures = [
            await self._producer.send(self._settings.dlq_topic, letter.value, headers=letter.headers(dead_at))
            for letter in letters
        ]
        await asyncio.gather(*futures)
