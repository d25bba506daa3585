"""The pipeline's processes as an operator runs them (`eventpipe receiver`, `eventpipe consumer`),
started from this checkout's code with the settings in their environment, so that a fault can stop,
kill or restart each one and the test can poll their probes and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pipeline.settings import PREFIX, Settings
from tests.conftest import ROOT
from tests.corpus import JWT_SECRET_ENV, jwt_secret
from tests.processes import environment
from tests.waiting import wait_for

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment that makes `eventpipe` load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(environment(settings))
    env[JWT_SECRET_ENV] = jwt_secret()
    return env


class Process:
    """One `eventpipe` subprocess, its output in a log file of its own."""

    def __init__(self, name: str, args: list[str], settings: Settings, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._args = args
        self._env = settings_env(settings)
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "eventpipe", *self._args],
                env=self._env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self._popen is not None
            self._popen.send_signal(sig)

    async def exited(self, seconds: float) -> int:
        """The exit code, waiting (polling) up to `seconds` for the process to end."""
        await wait_for(lambda: not self.running, seconds, lambda: f"{self.name} to exit\n{self.tail()}")
        code = self.returncode
        assert code is not None
        return code

    async def kill(self) -> None:
        self.send(signal.SIGKILL)
        await self.exited(30)

    async def stop(self, seconds: float = 60) -> int:
        """SIGTERM, as an orchestrator scales down; SIGKILL only if it does not leave in time."""
        self.send(signal.SIGTERM)
        try:
            return await self.exited(seconds)
        except AssertionError:
            await self.kill()
            raise

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"({self.name}: no log)"
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


class Receiver(Process):
    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        super().__init__(name, ["receiver"], settings, log_dir)
        self.url = f"http://127.0.0.1:{settings.http_port}"

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        return await probe(http, f"{self.url}/readyz") == 200


class Consumer(Process):
    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        super().__init__(name, ["consumer"], settings, log_dir)
        self.url = f"http://127.0.0.1:{settings.metrics_port}"

    async def readyz(self, http: aiohttp.ClientSession) -> int | None:
        """/readyz's status, or None while the process does not answer."""
        return await probe(http, f"{self.url}/readyz")

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        return await self.readyz(http) == 200

    async def alive(self, http: aiohttp.ClientSession) -> bool:
        return await probe(http, f"{self.url}/healthz") == 200

    async def metrics(self, http: aiohttp.ClientSession) -> list[Sample]:
        """Its /metrics samples (none while it does not answer)."""
        try:
            async with http.get(f"{self.url}/metrics", timeout=PROBE_TIMEOUT) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return []
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def probe(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url, timeout=PROBE_TIMEOUT) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None
