"""When a worker's run ends, and where its partitions start: the consumer's rule (run until stopped,
from the group's commits, batches pipelined) and replay's (from chosen offsets until caught up to
the high watermarks taken at its start, one batch at a time)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import TopicPartition

log = structlog.get_logger("eventpipe.consumer")


class Positions(Protocol):
    def held(self) -> AbstractSet[TopicPartition]: ...

    async def position(self, tp: TopicPartition) -> int: ...


class StopRule(Protocol):
    # Whether the next batch may be prepared while one is written. Off when the end is judged from
    # positions: they must not run ahead of what is stored.
    pipelined: bool

    def on_assigned(self, assigned: AbstractSet[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Where to seek partitions just assigned, before their first fetch (none: the group's commits)."""
        ...

    def on_committed(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def on_abandoned(self, closing: bool) -> bool:
        """A batch was abandoned (`closing`: by a rebalance or a stop). True: the run must stop."""
        ...

    async def reached_end(self, positions: Positions) -> bool: ...


class UntilStopped:
    """The consumer: every partition from the group's commits, until SIGTERM."""

    pipelined = True

    def on_assigned(self, assigned: AbstractSet[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def on_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def on_abandoned(self, closing: bool) -> bool:
        return False  # the strategy fetches the batch again

    async def reached_end(self, positions: Positions) -> bool:
        return False


@dataclass(frozen=True)
class Bounds:
    """A bounded run (replay): each partition is read from `start`, whatever the group committed
    before, and the run ends once every partition's position has reached `end` (the high watermarks
    taken when the run began)."""

    start: Mapping[TopicPartition, int]
    end: Mapping[TopicPartition, int]


class UntilCaughtUp:
    """Replay: from `bounds.start` until every partition's position reaches `bounds.end`."""

    pipelined = False

    def __init__(self, bounds: Bounds) -> None:
        self._end = bounds.end
        # Where each partition resumes after a rebalance: what this run has stored so far.
        self._resume_at: dict[TopicPartition, int] = dict(bounds.start)
        # Positions may be ahead of what is stored: a batch was abandoned and the partitions have
        # not been sought back yet (that happens on the reassignment).
        self._unsettled = False

    def on_assigned(self, assigned: AbstractSet[TopicPartition]) -> Mapping[TopicPartition, int]:
        self._unsettled = False
        return {tp: self._resume_at[tp] for tp in assigned & self._resume_at.keys()}

    def on_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._resume_at.update(offsets)

    def on_abandoned(self, closing: bool) -> bool:
        self._unsettled = True
        if closing:
            return False  # the reassignment seeks back to what is stored
        # The dead-letter topic refused the batch. Stop rather than claim to have caught up past
        # records not stored.
        log.error("bounded_run_stopped", reason="a batch could not be completed")
        return True

    async def reached_end(self, positions: Positions) -> bool:
        if self._unsettled:
            return False
        held = positions.held()
        for tp, end in self._end.items():
            # Positions, not stored offsets: a position also moves past offsets holding no record.
            if tp not in held or await positions.position(tp) < end:
                return False
        return True
