"""Where the receiver's keyless records go: one partition for a short window, then another, as Kafka's
own producer has done since KIP-480 (the sticky partitioner). A random partition per record, aiokafka's
default, splits each linger window's records into up to one batch per partition — many small produce
requests; sticking gives one batch per window. Over time records still spread over every partition."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from aiokafka.partitioner import DefaultPartitioner


class StickyPartitioner:
    """aiokafka's partitioner callable: `(key_bytes, all_partitions, available) -> partition`."""

    def __init__(
        self,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        choose: Callable[[Sequence[int]], int] = random.choice,
    ) -> None:
        self._window = window_seconds
        self._clock = clock
        self._choose = choose
        self._keyed = DefaultPartitioner()
        self._current: int | None = None
        self._until = 0.0

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is not None:
            return int(self._keyed(key, all_partitions, available))
        candidates = available or all_partitions
        now = self._clock()
        current = self._current
        if current is None or now >= self._until or current not in candidates:
            current = self._current = self._choose(candidates)
            self._until = now + self._window
        return current
