"""Real `eventpipe receiver` and `eventpipe consumer` processes configured from a Settings object (as
environment variables, the way an operator runs them), the corpus tenants, their own topics on the
real broker and their output in a file: for the tests that need what only a separate process shows
(its memory, its pid surviving abuse, its logs, its sockets, native TLS)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.secrets import Secret
from pipeline.settings import PREFIX, Settings
from tests.corpus import CORPUS, JWT_SECRET_ENV, Case, jwt_secret
from tests.kafka_util import create_topics
from tests.ports import free_port
from tests.waiting import wait_for, wait_until

STOP_SECONDS = 30.0


def environment(settings: Settings) -> dict[str, str]:
    """The EVENTPIPE_* variables that load back into these settings."""
    env = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue  # unset (no SASL password)
        if isinstance(value, Secret):
            text = value.reference  # the process resolves it from its own environment
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[PREFIX + f.name.upper()] = text
    return env


def receiver_environment(
    settings: Settings, tenants: Path, port: int, data_dir: Path, metrics_dir: Path
) -> dict[str, str]:
    """What `eventpipe receiver --workers N` is started with in the integration tests: the run's topics,
    its tenants file and port, JSON logs, the workers' shared metrics directory."""
    return {
        "EVENTPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EVENTPIPE_RAW_TOPIC": settings.raw_topic,
        "EVENTPIPE_DLQ_TOPIC": settings.dlq_topic,
        "EVENTPIPE_TENANTS": str(tenants),
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_DATA_DIR": str(data_dir),
        "EVENTPIPE_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }


async def spawn_receiver(workers: int, env: Mapping[str, str], output: Path) -> asyncio.subprocess.Process:
    """`eventpipe receiver --workers N` as an operator starts it; both its streams go to `output`."""
    with output.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "eventpipe", "receiver", "--workers", str(workers)),
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


async def workers_up(proc: asyncio.subprocess.Process, output: Path, workers: int) -> None:
    """Until every worker of a spawn_receiver listens and has its Kafka producer."""

    def up() -> bool:
        assert proc.returncode is None, output.read_text()
        text = output.read_text()
        return text.count('"receiver_listening"') == workers and text.count('"kafka_connected"') >= workers

    await wait_for(up, 90, output.read_text)


@dataclass
class EventpipeProcess:
    proc: subprocess.Popen[bytes]
    output: Path
    port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self, field: str) -> int:
        """A size from /proc/<pid>/status in bytes: VmRSS (resident now), VmHWM (its peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for pid {self.pid}")

    def open_connections(self) -> int:
        """Sockets the process holds open (its fds that are sockets)."""
        count = 0
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                if os.readlink(fd).startswith("socket:"):
                    count += 1
            except FileNotFoundError:
                continue  # closed while we looked
        return count

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")


def _ready(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def _running(
    command: str, settings: Settings, workdir: Path, args: tuple[str, ...], env: Mapping[str, str] | None
) -> Iterator[EventpipeProcess]:
    environ = {
        **os.environ,
        **environment(settings),
        PREFIX + "TENANTS": str(CORPUS / "tenants.toml"),
        JWT_SECRET_ENV: jwt_secret(),
        **(env or {}),
    }
    output = workdir / f"{command}-{os.urandom(3).hex()}.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", command, *args],
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    process = EventpipeProcess(proc, output)
    try:
        yield process
    finally:
        if process.alive():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def running_receiver(
    settings: Settings,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    client_tls: ssl.SSLContext | None = None,
    ready: bool = True,
) -> Iterator[EventpipeProcess]:
    """`eventpipe receiver` on a free port (its topics created first), ready when this yields unless
    `ready` is False (a receiver expected not to connect; its topics are then not created); stopped
    with SIGTERM afterwards."""
    if ready:
        asyncio.run(create_topics(settings))
    port = free_port()
    # Its record (receiver-<port>.json) goes to the test's directory, not the checkout's .eventpipe.
    env = {PREFIX + "DATA_DIR": str(workdir), **(env or {})}
    with _running("receiver", settings, workdir, ("--port", str(port), *args), env) as receiver:
        receiver.port = port
        receiver.scheme = "https" if client_tls else "http"

        def up() -> bool:
            assert receiver.alive(), receiver.log_text()
            return _ready(receiver.url, client_tls)

        if ready:
            wait_until(up, 60, receiver.log_text)
        yield receiver


@contextmanager
def running_consumer(
    settings: Settings, workdir: Path, env: Mapping[str, str] | None = None, ready: bool = True
) -> Iterator[EventpipeProcess]:
    """`eventpipe consumer` of settings' group, with partitions assigned when this yields unless
    `ready` is False; its health port is a free one, in `port`."""
    port = free_port()
    with _running("consumer", settings.replace(metrics_port=port), workdir, (), env) as consumer:
        consumer.port = port
        if ready:
            wait_until(lambda: "partitions_assigned" in consumer.log_text(), 60, consumer.log_text)
        yield consumer


@dataclass(frozen=True)
class Reply:
    vendor: str
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


async def post_case(
    session: aiohttp.ClientSession,
    base_url: str,
    case: Case,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    data: Any = None,
) -> Reply:
    """The case's request (its query, headers and body unless given others) and the whole reply."""
    async with session.post(
        base_url + case.path,
        params=case.query if params is None else params,
        headers=case.headers if headers is None else headers,
        data=case.body if data is None else data,
    ) as resp:
        return Reply(case.vendor, resp.status, resp.reason or "", dict(resp.headers), await resp.read())
