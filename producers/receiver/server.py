"""Running the receiver: one process, or N processes sharing the port (SO_REUSEPORT, the kernel
spreads connections) and one table of rate limit buckets, on uvloop. SIGTERM stops accepting and
drains in-flight requests; a second signal exits at once. SIGHUP reloads the tenants file (the parent
forwards it to every worker); `receiver-<port>.json` in the data directory says whom to signal."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
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
from producers.receiver import pidfile
from producers.receiver.acceptor import Acceptor, listening
from producers.receiver.app import STATE, create_app
from producers.receiver.body import SERVER_OPTIONS
from producers.receiver.buckets import RateLimiter, SharedBuckets
from producers.receiver.direct_routes import route_directly
from producers.receiver.metrics_view import MetricsView
from producers.receiver.reloading import (
    Coordinator,
    FileRequests,
    Record,
    Reloader,
    Requests,
    SnapshotRequests,
)
from producers.receiver.snapshots import Snapshots
from producers.receiver.tenants_reload import Counts, ServedTenants
from producers.receiver.valve import forget_lost

log = structlog.get_logger("eventpipe.receiver")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS_FILE = "rate-limit-buckets"


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
    served: ServedTenants,
    options: ServeOptions,
    requests: Requests,
    multiprocess_dir: str | None = None,
    started: asyncio.Event | None = None,
    buckets: Path | None = None,
    handling_signals: Callable[[], None] | None = None,
) -> None:
    """`handling_signals` is called once SIGHUP reloads rather than kills the process."""
    tenants = served.directory
    metrics = Metrics(CollectorRegistry(), tenant_labels=settings.tenant_labels)
    view = MetricsView(metrics.registry, multiprocess_dir)
    limiter = RateLimiter.shared(LimitTable.build(settings, tenants), buckets) if buckets else None
    app = create_app(settings, tenants, metrics, metrics_view=view, limiter=limiter)
    reloader = Reloader(app[STATE], served, requests)
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
    assert runner.server is not None  # set up
    route_directly(runner.server, app)
    valve = app[STATE].gate.valve
    forget_lost(runner.server, valve)
    # Not TCPSite: uvloop's server accepts one connection per loop turn (acceptor.py).
    acceptor = Acceptor(
        listening(settings.http_host, settings.http_port, reuse_port=options.workers > 1),
        runner.server,
        valve,
        _ssl_context(options),
    )
    acceptor.start()
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
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    # A worker starts with SIGHUP blocked (see _start_worker): one sent meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    if handling_signals is not None:
        handling_signals()
    if started is not None:
        started.set()
    await stop.wait()
    log.info("receiver_stopping", drain_seconds=settings.drain_seconds)
    acceptor.close()
    await runner.cleanup()
    log.info("receiver_stopped")


def _worker(
    settings: Settings, served: ServedTenants, options: ServeOptions, mp_dir: str, run_dir: Path
) -> None:
    ep_logging.configure(settings)
    # The parent handles Ctrl-C for the group; a worker only obeys the SIGTERM it forwards.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = SnapshotRequests(Snapshots(run_dir))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, served, options, requests, mp_dir, buckets=run_dir / BUCKETS_FILE))


def _record(settings: Settings, tenants: TenantDirectory, options: ServeOptions) -> Record:
    """The receiver's record. A record naming a receiver still running is taken over: with --workers
    two receivers can share the port (SO_REUSEPORT), e.g. a new one started before the old one is
    stopped, and the newest is the one a reload should reach."""
    path = pidfile.path_for(settings.data_dir, settings.http_port)
    try:
        found = pidfile.read(path)
    except (OSError, ValueError):
        found = None  # unreadable: ours replaces it
    if found is not None and found.pid != os.getpid() and pidfile.alive(found):
        log.warning("receiver_record_taken_over", path=str(path), previous_pid=found.pid)
    pid = os.getpid()
    record = pidfile.ReceiverRecord(
        pid=pid,
        started=pidfile.process_started(pid) or 0,
        host=settings.http_host,
        port=settings.http_port,
        tls=bool(options.tls_cert),
        workers=max(1, options.workers),
        tenants_file=str(Path(settings.tenants).absolute()) if settings.tenants else "",
        reload=pidfile.ReloadStatus(**dataclasses.asdict(Counts.of(tenants))),
    )
    return Record(path, record)


def run(
    settings: Settings, tenants: TenantDirectory, options: ServeOptions, environ: Mapping[str, str]
) -> int:
    served = ServedTenants(settings, environ, tenants)
    record = _record(settings, tenants, options)
    try:
        if options.workers <= 1:
            requests = FileRequests(settings.tenants, record)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(
                    serve(for_worker(settings, 0), served, options, requests, handling_signals=record.write)
                )
            return 0
        run_dir = Path(tempfile.mkdtemp(prefix="eventpipe-receiver-"))
        try:
            # The buckets exist before any worker does, so every worker attaches to the same ones.
            buckets = run_dir / BUCKETS_FILE
            SharedBuckets.create(buckets, LimitTable.build(settings, tenants).limits, time.monotonic())
            coordinator = Coordinator(settings.tenants, served, Snapshots(run_dir), record)
            return _run_workers(settings, coordinator, options, environ, run_dir, record)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        record.remove()


def for_worker(settings: Settings, slot: int) -> Settings:
    """Worker `slot`'s settings: a transactional id of its own, the same for the worker that replaces it
    (whose first InitProducerId then aborts whatever the dead one left open)."""
    if not settings.kafka_transactional_id:
        return settings
    return dataclasses.replace(settings, kafka_transactional_id=f"{settings.kafka_transactional_id}-{slot}")


def _start_worker(ctx: multiprocessing.context.SpawnContext, args: tuple[object, ...]) -> BaseProcess:
    # The worker inherits SIGHUP blocked and unblocks it once its handler is in place: a reload
    # signalled while it starts waits for it rather than killing it (SIGHUP's default action).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        worker: BaseProcess = ctx.Process(target=_worker, args=args)
        worker.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return worker


def _run_workers(
    settings: Settings,
    coordinator: Coordinator,
    options: ServeOptions,
    environ: Mapping[str, str],
    run_dir: Path,
    record: Record,
) -> int:
    mp_dir = environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="eventpipe-metrics-")
    # prometheus-client picks its value store when imported: the spawned workers must see the
    # directory in their environment from the start.
    os.environ[MULTIPROC_ENV] = mp_dir
    ctx = multiprocessing.get_context("spawn")
    signal.signal(signal.SIGHUP, coordinator.request)
    # A signal writes to this pipe, which wakes the supervision loop at once rather than at its next tick.
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    try:
        return _supervise(ctx, settings, coordinator, options, mp_dir, run_dir, record, wake)
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake)
        os.close(woken)


def _supervise(
    ctx: multiprocessing.context.SpawnContext,
    settings: Settings,
    coordinator: Coordinator,
    options: ServeOptions,
    mp_dir: str,
    run_dir: Path,
    record: Record,
    wake: int,
) -> int:
    from prometheus_client import multiprocess

    record.write()

    slots: dict[BaseProcess, int] = {}

    def start(slot: int) -> BaseProcess:
        # The tenants served now: a replacement worker starts from the last reload, not the start.
        worker_settings = for_worker(settings, slot)
        proc = _start_worker(ctx, (worker_settings, coordinator.served, options, mp_dir, run_dir))
        slots[proc] = slot
        return proc

    procs = [start(slot) for slot in range(options.workers)]
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
        if wake in multiprocessing.connection.wait([wake, *(p.sentinel for p in procs)], timeout=0.5):
            os.read(wake, 1024)
        if not stopping:
            coordinator.run_pending([p.pid for p in procs if p.pid is not None and p.exitcode is None])
        for proc in list(procs):
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
            procs.append(start(slots.pop(proc)))
    return exit_code
