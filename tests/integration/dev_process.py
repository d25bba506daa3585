"""`eventpipe dev` as a user runs it, in a subprocess on free ports and its own topics: for the tests
that need the whole pipeline of the README's first command up and running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port, free_port_run
from tests.waiting import wait_until


@dataclass
class DevProcess:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    output: Path

    @property
    def http_port(self) -> int:
        return int(self.env["EVENTPIPE_HTTP_PORT"])

    @property
    def consumer_ports(self) -> list[int]:
        """The two consumers serve /metrics on the ports after EVENTPIPE_METRICS_PORT."""
        base = int(self.env["EVENTPIPE_METRICS_PORT"])
        return [base + 1, base + 2]

    def text(self) -> str:
        return self.output.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


@contextmanager
def running_dev(kafka_bootstrap: str, data_dir: Path, **settings: str) -> Iterator[DevProcess]:
    """Starts `eventpipe dev` with its state in data_dir and waits until it prints its curl lines;
    stops it (Ctrl-C) on the way out."""
    tag = os.urandom(4).hex()
    env = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "EVENTPIPE_DATA_DIR": str(data_dir),
        "EVENTPIPE_SINK": f"sqlite:///{data_dir / 'events.db'}",
        "EVENTPIPE_HTTP_PORT": str(free_port()),
        "EVENTPIPE_METRICS_PORT": str(free_port_run(2)),
        "EVENTPIPE_RAW_TOPIC": f"dev-{tag}.raw",
        "EVENTPIPE_DLQ_TOPIC": f"dev-{tag}.dlq",
        "EVENTPIPE_CONSUMER_GROUP": f"dev-{tag}",
        "EVENTPIPE_RAW_PARTITIONS": "3",
        **{f"EVENTPIPE_{k.upper()}": v for k, v in settings.items()},
    }
    output = data_dir / "dev.out"
    with output.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "dev"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    dev = DevProcess(proc, env, output)
    try:

        def up() -> bool:
            assert proc.poll() is None, dev.text()
            return "Ctrl-C stops everything" in dev.text()

        wait_until(up, 120, dev.text)
        yield dev
    finally:
        dev.stop()
