"""The receiver's metric updates, gathered per event-loop tick and written to prometheus-client once
per tick. Under `--workers N` every update of a prometheus-client value takes a lock, checks the pid
and writes the worker's mmap file (its multiprocess mode), and a request made about ten of them;
here a request adds to plain dicts and each label set touched in the tick is written once, right after
the tick's requests have run (call_soon), so /metrics — aggregated over the workers' files — counts
every request of every worker, as before. /metrics writes its own worker's pending updates first."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

Labels = tuple[str, ...]


class Tally:
    def __init__(self, in_flight: Gauge) -> None:
        self._in_flight_gauge = in_flight
        self.in_flight = 0  # requests being handled now, published as the gauge once per tick
        self._written_in_flight = 0
        self._counts: dict[tuple[Counter, Labels], float] = {}
        self._observed: dict[tuple[Histogram, Labels], list[float]] = {}
        self._scheduled = False

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def inc(self, counter: Counter, labels: Labels, amount: float = 1.0) -> None:
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount
        self._schedule()

    def observe(self, histogram: Histogram, labels: Labels, value: float, times: int = 1) -> None:
        key = (histogram, labels)
        values = self._observed.get(key)
        if values is None:
            values = self._observed[key] = []
        if times == 1:
            values.append(value)
        else:
            values.extend([value] * times)
        self._schedule()

    def enter(self) -> None:
        self.in_flight += 1
        self._schedule()

    def leave(self) -> None:
        self.in_flight -= 1
        self._schedule()

    def flush(self) -> None:
        self._scheduled = False
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)
        for (histogram, labels), values in observed.items():
            _observe_all(histogram.labels(*labels) if labels else histogram, values)
        if self.in_flight != self._written_in_flight:
            self._written_in_flight = self.in_flight
            self._in_flight_gauge.set(self.in_flight)


def _observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """Histogram.observe for many values at once: one write to the sum and one per bucket touched,
    instead of two per value. prometheus-client has no public call for it; its histogram keeps the
    buckets' upper bounds and one value per bucket (non-cumulative), which is what observe() adds to."""
    child: Any = histogram
    bounds: Sequence[float] = child._upper_bounds
    buckets = [0] * len(bounds)
    for value in values:
        buckets[bisect.bisect_left(bounds, value)] += 1  # observe(): the first bound >= value
    child._sum.inc(sum(values))
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)
