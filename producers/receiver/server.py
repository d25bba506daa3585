"""Running the receiver: one process, or N processes sharing the port (SO_REUSEPORT, the kernel
spreads connections) and one table of rate limit buckets, on uvloop. SIGTERM stops accepting and
drains in-flight requests; a second signal exits at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import logging as ep_logging
from pipeline.metrics import Metrics
from pipeline.rate_limits import LimitTable
from pipeline.settings import Settings
from pipeline.tenants import TenantDirectory
from producers.receiver.app import create_app
from producers.receiver.body import SERVER_OPTIONS
from producers.receiver.buckets import RateLimiter, SharedBuckets
from producers.receiver.metrics_view import MetricsView

log = structlog.get_logger("eventpipe.receiver")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServeOptions:
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None


def _ssl_context(options: ServeOptions) -> ssl.SSLContext | None:
    if not options.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


async def serve(
    settings: Settings,
    tenants: TenantDirectory,
    options: ServeOptions,
    multiprocess_dir: str | None = None,
    started: asyncio.Event | None = None,
    buckets: Path | None = None,
) -> None:
    metrics = Metrics(CollectorRegistry(), tenant_labels=settings.tenant_labels)
    view = MetricsView(metrics.registry, multiprocess_dir)
    limiter = RateLimiter.shared(LimitTable.build(settings, tenants), buckets) if buckets else None
    app = create_app(settings, tenants, metrics, metrics_view=view, limiter=limiter)
    # keepalive_timeout also bounds a connection that never completes its headers (a slow-loris client):
    # aiohttp arms it when the connection opens. Above a load balancer's usual 60 s idle timeout, so the
    # balancer, not the receiver, closes an idle pooled connection first.
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.drain_seconds,
        access_log=None,
        keepalive_timeout=settings.http_idle_timeout_seconds,
        **SERVER_OPTIONS,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.http_host,
        settings.http_port,
        reuse_port=options.workers > 1,
        ssl_context=_ssl_context(options),
        backlog=1024,
    )
    await site.start()
    log.info("receiver_listening", host=settings.http_host, port=settings.http_port, pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(1)  # second signal: the operator wants out now
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if started is not None:
        started.set()
    await stop.wait()
    log.info("receiver_stopping", drain_seconds=settings.drain_seconds)
    await runner.cleanup()
    log.info("receiver_stopped")


def _worker(
    settings: Settings, tenants: TenantDirectory, options: ServeOptions, mp_dir: str, buckets: Path
) -> None:
    ep_logging.configure(settings)
    # The parent handles Ctrl-C for the group; a worker only obeys the SIGTERM it forwards.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, tenants, options, mp_dir, buckets=buckets))


def run(
    settings: Settings, tenants: TenantDirectory, options: ServeOptions, environ: Mapping[str, str]
) -> int:
    if options.workers <= 1:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings, tenants, options))
        return 0
    run_dir = Path(tempfile.mkdtemp(prefix="eventpipe-receiver-"))
    try:
        # The buckets exist before any worker does, so every worker attaches to the same ones.
        buckets = run_dir / "rate-limit-buckets"
        SharedBuckets.create(buckets, LimitTable.build(settings, tenants).limits, time.monotonic())
        return _run_workers(settings, tenants, options, environ, buckets)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_workers(
    settings: Settings,
    tenants: TenantDirectory,
    options: ServeOptions,
    environ: Mapping[str, str],
    buckets: Path,
) -> int:
    from prometheus_client import multiprocess

    mp_dir = environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="eventpipe-metrics-")
    # prometheus-client picks its value store when imported: the spawned workers must see the
    # directory in their environment from the start.
    os.environ[MULTIPROC_ENV] = mp_dir
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    for _ in range(options.workers):
        worker: BaseProcess = ctx.Process(target=_worker, args=(settings, tenants, options, mp_dir, buckets))
        worker.start()
        procs.append(worker)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            for p in procs:
                if p.pid and p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
            return
        stopping = True
        for p in procs:
            if p.pid and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    while procs:
        for proc in list(procs):
            proc.join(timeout=0.5)
            if proc.exitcode is None:
                continue
            procs.remove(proc)
            if proc.pid is not None:
                multiprocess.mark_process_dead(proc.pid, mp_dir)  # type: ignore[no-untyped-call]
            if stopping:
                continue
            # A worker that died on its own is replaced, so the port keeps its capacity.
            log.error("receiver_worker_died", pid=proc.pid, exitcode=proc.exitcode)
            exit_code = 1
            replacement: BaseProcess = ctx.Process(
                target=_worker, args=(settings, tenants, options, mp_dir, buckets)
            )
            replacement.start()
            procs.append(replacement)
    return exit_code
