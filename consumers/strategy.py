"""The batches of one partition assignment (arroyo's processing strategy): a batch is prepared while
the one before it is written, and batches finish one at a time, in order. The worker makes a fresh
strategy when partitions are assigned, and on revoke closes it and waits for it (join), so that the
batch in hand is written and committed before the partitions go, and a batch prepared but not begun
is dropped uncommitted: the partitions restart from the last commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from consumers.batch import Batch, Outcome, Prepare
from consumers.checkpoint import BatchAbandoned, Checkpoint
from consumers.decode import RawRecord
from consumers.partitions import Partitions
from consumers.stop_rule import StopRule
from pipeline.backoff import Backoff

log = structlog.get_logger("eventpipe.consumer")


@dataclass
class Totals:
    """What every strategy of a worker has committed, added up."""

    batches: int = 0
    outcome: Outcome = field(default_factory=Outcome)


@dataclass(frozen=True)
class Steps:
    """What outlives an assignment, and makes each one's strategy (arroyo's strategy factory)."""

    prepare: Prepare
    checkpoint: Checkpoint
    partitions: Partitions
    rule: StopRule
    # Between fetches of an abandoned batch; grows over repeated abandonments, reset by a commit.
    refetch: Backoff
    stopping: asyncio.Event
    totals: Totals

    def create(self) -> Strategy:
        return Strategy(self)


@dataclass(frozen=True)
class _Writing:
    batch: Batch
    task: asyncio.Task[bool]  # True once committed (or dropped), False when abandoned


class Strategy:
    def __init__(self, steps: Steps) -> None:
        self._steps = steps
        self._closed = False
        self._writing: _Writing | None = None  # at most one batch at a time, so commits stay in order

    def giving_up(self) -> bool:
        """A rebalance or a stop: no batch is begun, and the one in hand stops waiting for the sink."""
        return self._closed or self._steps.stopping.is_set()

    async def submit(self, records: Sequence[RawRecord]) -> None:
        """Prepare a batch of these records, wait for the one being written, then begin this one."""
        if self._closed:
            return  # revoked: the partitions restart from the last commit
        writing = self._writing
        # The batch being written counts for dedup through its keys while it may still be stored.
        batch = self._steps.prepare(records, writing.batch.fresh_keys if writing else frozenset())
        # Abandoned: rewound to it and to these records, fetched after it maybe from other partitions.
        if writing is not None and not await self._settle(writing, records):
            return
        self._writing = begun = _Writing(batch, asyncio.create_task(self._finish(batch), name="batch"))
        if not self._steps.rule.pipelined:
            await self._settle(begun, ())

    async def flush(self) -> None:
        """Wait for the batch being written (nothing new was fetched), then commit what the consumer
        skipped past (Partitions.commit_skipped)."""
        if self._writing is not None and not await self._settle(self._writing, ()):
            return  # abandoned: rewound, to be fetched again
        if not self.giving_up():
            await self._steps.partitions.commit_skipped()

    def close(self) -> None:
        """No batch is begun from now on; the one in hand finishes, or gives up waiting for the sink."""
        self._closed = True

    async def join(self) -> None:
        """Wait until the batch in hand is committed or abandoned."""
        if self._writing is not None:
            # Shielded: a revoke callback cancelled by the consumer's stop leaves the batch running.
            await asyncio.shield(self._writing.task)

    async def _settle(self, writing: _Writing, after: Sequence[RawRecord]) -> bool:
        """Wait for a batch; if it was abandoned, fetch it and `after` again. False when abandoned."""
        committed = await writing.task
        if self._writing is writing:
            self._writing = None
        if not committed:
            await self._refetch([*writing.batch.records, *after])
        return committed

    async def _finish(self, batch: Batch) -> bool:
        if self._closed:
            return True  # revoked before it began: dropped, the partitions restart from the last commit
        steps = self._steps
        try:
            outcome = await steps.checkpoint.run(batch, self.giving_up)
        except BatchAbandoned:
            log.warning("batch_abandoned", records=len(batch.records))
            if steps.rule.on_abandoned(closing=self.giving_up()):
                steps.stopping.set()
            return False
        steps.rule.on_committed(batch.offsets)
        steps.refetch.reset()
        steps.totals.batches += 1
        steps.totals.outcome += outcome
        return True

    async def _refetch(self, records: Sequence[RawRecord]) -> None:
        """Fetch an abandoned batch again after a pause. Within a rebalance or a stop there is nothing
        to do: the partitions restart from the last commit."""
        if self.giving_up():
            return
        partitions = self._steps.partitions
        partitions.rewind(records)
        partitions.pause()
        await partitions.idle(self._steps.refetch.step(), until=self.giving_up)
        partitions.resume()
