"""What a sink is to the worker: an idempotent batch writer with explicit start and close. The sink's
unique key (tenant, source, event_type, event_id) is the authority on duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pipeline.canonical import CanonicalEvent


@dataclass(frozen=True)
class WriteResult:
    """Per source: how many of the batch's events became new rows; the rest were already stored."""

    inserted_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def inserted(self) -> int:
        return sum(self.inserted_by_source.values())


class Sink(Protocol):
    name: str  # "sqlite" or "postgresql", the metric label

    async def start(self) -> None:
        """Connect and create the `events` table if missing (idempotent, safe from several processes).
        Raises SinkUnavailable when the database cannot be reached."""
        ...

    async def close(self) -> None: ...

    async def write(self, events: Sequence[CanonicalEvent], stored_at: datetime) -> WriteResult:
        """Insert the batch in ONE transaction; rows whose key exists are skipped (never updated).
        Raises SinkUnavailable for anything transient (connection lost, disk full, read-only, locked
        beyond the busy timeout): nothing of the batch is then stored. Raises UnstorableEvent when an
        event's own data can never be written (the worker then writes events one by one and
        dead-letters the ones that fail)."""
        ...

    async def ping(self) -> bool:
        """True when a trivial query succeeds within a couple of seconds."""
        ...

    async def count(self) -> int:
        """Rows in `events` (for `eventpipe status` and tests). Raises SinkUnavailable when the
        database, or (for a sink opened with create=False) its table, cannot be read."""
        ...
