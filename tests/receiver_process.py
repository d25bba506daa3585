"""A real `eventpipe receiver` process on a free port, with the corpus tenants, its own topics on the
real broker and its output in a file: for the tests that need what only a separate process shows (its
memory, its pid surviving abuse, its logs, its sockets, native TLS)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import Settings
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret
from tests.kafka_util import create_topics
from tests.waiting import wait_until

STOP_SECONDS = 30.0


def free_port() -> int:
    """A loopback port nobody listens on (bind to 0, read it back, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ReceiverProcess:
    proc: subprocess.Popen[bytes]
    port: int
    output: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def open_connections(self) -> int:
        """Sockets the process holds open (its fds that are sockets)."""
        fds = Path(f"/proc/{self.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            try:
                if os.readlink(fd).startswith("socket:"):
                    count += 1
            except FileNotFoundError:
                continue  # closed while we looked
        return count

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, and the exit code once it has drained."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_SECONDS)


def _ready(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def running_receiver(
    settings: Settings,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    client_tls: ssl.SSLContext | None = None,
) -> Iterator[ReceiverProcess]:
    """The receiver as `eventpipe receiver` runs it, configured from `settings` (its topics are created
    first), ready when this yields; stopped with SIGTERM afterwards."""
    asyncio.run(create_topics(settings))
    port = free_port()
    environ = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EVENTPIPE_RAW_TOPIC": settings.raw_topic,
        "EVENTPIPE_DLQ_TOPIC": settings.dlq_topic,
        "EVENTPIPE_TENANTS": str(CORPUS / "tenants.toml"),
        JWT_SECRET_ENV: jwt_secret(),
        "EVENTPIPE_LOG_FORMAT": "json",
        "EVENTPIPE_REQUEST_READ_TIMEOUT_SECONDS": str(settings.request_read_timeout_seconds),
        "EVENTPIPE_HTTP_IDLE_TIMEOUT_SECONDS": str(settings.http_idle_timeout_seconds),
        "EVENTPIPE_MAX_BODY_BYTES": str(settings.max_body_bytes),
        "EVENTPIPE_LOG_LEVEL": settings.log_level,
        **(env or {}),
    }
    output = workdir / f"receiver-{port}.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "receiver", "--port", str(port), *args],
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    receiver = ReceiverProcess(proc, port, output, "https" if client_tls else "http")
    try:

        def up() -> bool:
            assert receiver.alive(), receiver.log_text()
            return _ready(receiver.url, client_tls)

        wait_until(up, 60, receiver.log_text)
        yield receiver
    finally:
        if receiver.alive():
            receiver.proc.send_signal(signal.SIGTERM)
            try:
                receiver.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                receiver.proc.kill()
                receiver.proc.wait()
