"""Running one consumer worker as a process: uvloop, signals (the first finishes the batch in hand and
leaves the group; a second exits at once and the unflushed batch is redelivered)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop
from prometheus_client import CollectorRegistry

from consumers.sinks import open_sink
from consumers.worker import Worker
from pipeline.metrics import Metrics
from pipeline.settings import Settings

T = TypeVar("T")
GC_GEN0_THRESHOLD = 50_000


async def drive(worker: Worker) -> None:
    """Start the worker, run it until it returns or a signal asks it to stop, and close it."""
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(1)
        worker.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.start()
    # Everything built so far (modules, decoders, clients) lives as long as the process: out of the
    # collector's sight. A batch allocates a few dicts per event and lets them all go at once, so the
    # default gen0 threshold of 700 would run the collector hundreds of times per batch.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    try:
        await worker.run()
    finally:
        await worker.close()


async def serve(settings: Settings, group_id: str | None = None) -> None:
    # /metrics and the probes listen where the receiver would (0.0.0.0 in containers) so that
    # Prometheus and Kubernetes can reach them; 127.0.0.1 locally.
    worker = Worker(
        settings,
        Metrics(CollectorRegistry()),
        open_sink(settings.sink),
        group_id=group_id,
        health_host=settings.http_host,
    )
    await drive(worker)


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run(settings: Settings, group_id: str | None = None) -> int:
    run_on_uvloop(serve(settings, group_id))
    return 0
