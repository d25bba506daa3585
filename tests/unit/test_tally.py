"""The receiver's per-tick metric tally: after the tick, prometheus-client holds exactly what one
update per request would have written."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from pipeline.metrics import LATENCY_BUCKETS, Metrics
from producers.receiver.tally import Tally

VALUES = [0.0005, 0.001, 0.0011, 0.003, 0.003, 0.07, 2.0, 11.0, 30.0]


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def test_a_ticks_updates_land_once_the_tick_is_over_as_one_update_per_request_would() -> None:
    tallied, direct = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    tally = Tally(tallied.in_flight)
    for value in VALUES:
        tally.enter()
        tally.observe(tallied.request_latency, ("topsort",), value)
        tally.inc(tallied.requests, ("topsort", "events", "204"))
        tally.inc(tallied.events_accepted, ("topsort",), 3)
        direct.request_latency.labels("topsort").observe(value)
        direct.requests.labels("topsort", "events", "204").inc()
        direct.events_accepted.labels("topsort").inc(3)
    tally.observe(tallied.produce_latency, (), 0.004, times=5)
    for _ in range(5):
        direct.produce_latency.observe(0.004)
    tally.leave()
    direct.in_flight.set(len(VALUES) - 1)
    assert not any(name == "eventpipe_receiver_requests_total" for name, _ in _samples(tallied))
    await asyncio.sleep(0)  # the tick ends: its updates are written
    assert _samples(tallied) == _samples(direct)
    assert VALUES[-1] > LATENCY_BUCKETS[-1]  # the +Inf bucket is covered too


async def test_flush_writes_at_once() -> None:
    metrics = Metrics(CollectorRegistry())
    tally = Tally(metrics.in_flight)
    tally.inc(metrics.requests, ("dfinery", "events", "200"))
    tally.flush()
    assert (
        _samples(metrics)[
            (
                "eventpipe_receiver_requests_total",
                (("route", "events"), ("source", "dfinery"), ("status", "200")),
            )
        ]
        == 1
    )
