"""`eventpipe tenants reload`: signal the receiver on this machine to re-read its tenants file, then
wait for the verdict (its record in the data directory) and, when accepted, for every worker to
serve the new file (their generation gauges on the receiver's aggregated /metrics)."""

from __future__ import annotations

import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings
from producers.receiver import pidfile

GENERATION = "eventpipe_receiver_tenants_generation"
POLL_SECONDS = 0.05

T = TypeVar("T")


def worker_generations(metrics_text: str) -> dict[str, int]:
    """The generation each worker serves, by pid ("" for a single receiver process)."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == GENERATION:
            for sample in family.samples:
                found[sample.labels.get("pid", "")] = int(sample.value)
    return found


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe(status: pidfile.ReloadStatus) -> str:
    return (
        f"{_plural(status.tenants, 'tenant')}, {_plural(status.api_keys, 'API key')}, "
        f"{_plural(status.jwt_secrets, 'JWT secret')}"
    )


def _metrics_url(record: pidfile.ReceiverRecord) -> str:
    host = record.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if record.tls else 'http'}://{host}:{record.port}/metrics"


def _fetch(url: str) -> str | None:
    # Our own receiver on this machine, read for a gauge: its certificate (often issued for a public
    # name, or self-signed) is not what is being checked here.
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 - our receiver
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def _poll(probe: Callable[[], T | None], deadline: float) -> T | None:
    while True:
        found = probe()
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(POLL_SECONDS)


def main(settings: Settings, port: int | None, timeout: float) -> int:
    port = port or settings.http_port
    path = pidfile.path_for(settings.data_dir, port)
    try:
        record = pidfile.read(path)
    except (OSError, msgspec.DecodeError) as exc:
        return _fail(f"cannot read the receiver's record {path}: {exc}")
    if record is None:
        return _fail(
            f"no receiver record at {path}: is `eventpipe receiver` running on port {port} with "
            f"EVENTPIPE_DATA_DIR={settings.data_dir}? (a relative data directory counts from where it "
            "was started)"
        )
    if not pidfile.alive(record):
        return _fail(f"the receiver of {path} (pid {record.pid}) is not running any more")
    before = record.reload.seq
    signalled = time.monotonic()
    os.kill(record.pid, signal.SIGHUP)
    deadline = signalled + timeout

    def verdict() -> pidfile.ReloadStatus | None:
        now = pidfile.read(path)
        return now.reload if now is not None and now.reload.seq > before else None

    status = _poll(verdict, deadline)
    if status is None:
        return _fail(f"the receiver (pid {record.pid}) gave no verdict within {timeout:g} s")
    if status.outcome != "reloaded":
        return _fail(
            f"tenants reload refused: {status.reason}\n"
            f"the receiver keeps serving generation {status.generation} ({describe(status)})"
        )
    url = _metrics_url(record)
    latest: dict[str, int] = {}

    def every_worker() -> bool | None:
        text = _fetch(url)
        if text is not None:
            latest.clear()
            latest.update(worker_generations(text))
        serving = [g for g in latest.values() if g >= status.generation]
        return True if len(serving) >= record.workers else None

    if _poll(every_worker, deadline) is None:
        behind = ", ".join(f"pid {pid or record.pid}: generation {g}" for pid, g in sorted(latest.items()))
        return _fail(
            f"the receiver accepted generation {status.generation}, but not every one of its "
            f"{record.workers} workers serves it after {timeout:g} s ({behind or f'no answer from {url}'})"
        )
    elapsed = time.monotonic() - signalled
    who = "the receiver" if record.workers == 1 else f"all {record.workers} workers"
    print(
        f"tenants reloaded: generation {status.generation} of {record.tenants_file} ({describe(status)}); "
        f"served by {who} {elapsed:.2f} s after the signal"
    )
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
