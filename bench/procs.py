"""Starting and stopping the processes under measurement (receiver, consumers, the no-op server) as
they run in production: separate OS processes from the CLI, logs to the run's work directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench.payloads import write_tenants
from bench.services import free_port
from pipeline import topics
from pipeline.settings import Settings


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL we built
            return int(resp.status)
    except OSError:
        return 0


def wait_http(url: str, procs: list[subprocess.Popen[bytes]], seconds: float = 60.0, times: int = 3) -> None:
    """Until `url` answers 200 `times` times in a row (each worker of a shared port may answer)."""
    deadline = time.monotonic() + seconds
    streak = 0
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} while starting")
        streak = streak + 1 if _get(url) == 200 else 0
        if streak >= times:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {seconds:.0f}s")


def _spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(procs: list[subprocess.Popen[bytes]], seconds: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


NO_RATE_LIMITS = "retailrocket=0,dfinery=0,topsort=0,impression=0"


def receiver_topics_env(
    bootstrap: str, workdir: Path, prefix: str, **extra: str
) -> tuple[Settings, dict[str, str]]:
    """Fresh topics `<prefix>.<tag>.raw/.dlq` on the broker, and the environment of a receiver writing
    to them: the bench's tenants (written into `workdir`), no rate limits (capacity is measured, not
    the vendors' per-site limits), `extra` settings on top (`rate_limits` among them puts limits back)."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap, raw_topic=f"{prefix}.{tag}.raw", dlq_topic=f"{prefix}.{tag}.dlq"
    )
    asyncio.run(topics.ensure(settings))
    env = pipeline_env(
        os.environ,
        kafka_bootstrap=bootstrap,
        raw_topic=settings.raw_topic,
        dlq_topic=settings.dlq_topic,
        tenants=str(write_tenants(workdir / "tenants.toml")),
        **{"rate_limits": NO_RATE_LIMITS, **extra},
    )
    return settings, env


def pipeline_env(base: Mapping[str, str], **settings: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("EVENTPIPE_")}
    env.update({"EVENTPIPE_LOG_LEVEL": "warning", "EVENTPIPE_LOG_FORMAT": "json"})
    env.update({f"EVENTPIPE_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def receiver(
    env: Mapping[str, str], workers: int, logdir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [sys.executable, "-m", "eventpipe", "receiver", "--workers", str(workers), "--port", str(port)]
    proc = _spawn(args, env, logdir / f"receiver-{port}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", [proc])
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop([proc])


@contextlib.contextmanager
def noop_server(workers: int, logdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [sys.executable, "-m", "bench.noop_server", "--port", str(port), "--workers", str(workers)]
    proc = _spawn(args, os.environ, logdir / f"noop-{port}.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/x", data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1):  # noqa: S310 - loopback URL we built
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop([proc])


@contextlib.contextmanager
def consumers(env: Mapping[str, str], count: int, logdir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    args = [sys.executable, "-m", "eventpipe", "consumer"]
    procs = [
        _spawn(args, {**env, "EVENTPIPE_METRICS_PORT": "0"}, logdir / f"consumer-{i}.log")
        for i in range(count)
    ]
    try:
        yield procs
    finally:
        stop(procs)
