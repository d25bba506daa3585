"""The receiver's sticky partitioner: one partition per window for keyless records, keyed records hashed."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.partitioner import DefaultPartitioner

from producers.receiver.partitioner import StickyPartitioner


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cycle() -> object:
    picks = iter(range(1000))

    def choose(candidates: Sequence[int]) -> int:
        return candidates[next(picks) % len(candidates)]

    return choose


def test_keyless_records_stick_to_one_partition_within_the_window() -> None:
    clock = Clock()
    part = StickyPartitioner(0.005, clock=clock, choose=_cycle())  # type: ignore[arg-type]
    parts = list(range(12))
    first = {part(None, parts, parts) for _ in range(50)}
    clock.now += 0.006
    second = {part(None, parts, parts) for _ in range(50)}
    assert first == {0}
    assert second == {1}


def test_switches_at_once_when_the_partition_becomes_unavailable() -> None:
    clock = Clock()
    part = StickyPartitioner(10.0, clock=clock, choose=_cycle())  # type: ignore[arg-type]
    assert part(None, [0, 1, 2], [0, 1, 2]) == 0
    assert part(None, [0, 1, 2], [1, 2]) == 2  # the second pick of the cycle among what is available


def test_records_spread_over_every_partition_over_time() -> None:
    clock = Clock()
    part = StickyPartitioner(0.005, clock=clock)
    parts = list(range(12))
    seen = set()
    for _ in range(2000):
        seen.add(part(None, parts, parts))
        clock.now += 0.006
    assert seen == set(parts)


def test_keyed_records_keep_the_default_hash() -> None:
    part = StickyPartitioner(0.005)
    parts = list(range(12))
    for key in (b"user-1", b"user-2", b"tenant-a"):
        assert part(key, parts, parts) == DefaultPartitioner()(key, parts, parts)
