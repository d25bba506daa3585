"""The README's first command as a user runs it: `eventpipe dev` brings the pipeline up, the curl lines
it prints land rows in SQLite, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


def _free_port_run(n: int) -> int:
    """A port p with p+1..p+n free too (the consumers' metrics ports)."""
    for _ in range(100):
        base = free_port()
        ok = True
        for i in range(1, n + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + i))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise AssertionError("no free port run")


def test_dev_runs_the_pipeline_and_its_curl_lines_land_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = os.urandom(4).hex()
    env = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "EVENTPIPE_DATA_DIR": str(tmp_path),
        "EVENTPIPE_SINK": f"sqlite:///{tmp_path / 'events.db'}",
        "EVENTPIPE_HTTP_PORT": str(free_port()),
        "EVENTPIPE_METRICS_PORT": str(_free_port_run(2)),
        "EVENTPIPE_RAW_TOPIC": f"dev-{tag}.raw",
        "EVENTPIPE_DLQ_TOPIC": f"dev-{tag}.dlq",
        "EVENTPIPE_CONSUMER_GROUP": f"dev-{tag}",
        "EVENTPIPE_RAW_PARTITIONS": "3",
    }
    out = tmp_path / "dev.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "dev"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, out.read_text()
            return "Ctrl-C stops everything" in out.read_text()

        wait_until(up, 120, out.read_text)
        curls = [line for line in out.read_text().splitlines() if line.startswith("curl ")]
        assert len(curls) == 4
        for line in curls:
            result = subprocess.run(
                shlex.split(line), capture_output=True, text=True, timeout=30, check=False
            )
            status = result.stdout.splitlines()[0]
            assert " 20" in status, (line, result.stdout)

        db = tmp_path / "events.db"

        def sources() -> list[str]:
            if not db.exists():
                return []
            conn = sqlite3.connect(db)
            try:
                return sorted(r[0] for r in conn.execute("SELECT source FROM events"))
            except sqlite3.OperationalError:
                return []
            finally:
                conn.close()

        every_vendor = ["dfinery", "impression", "retailrocket", "topsort"]
        wait_until(lambda: sources() == every_vendor, 30, lambda: f"a row per vendor; have {sources()}")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, out.read_text()
    # every child stopped with it: nothing listens any more on the receiver's or consumers' ports
    metrics_port = int(env["EVENTPIPE_METRICS_PORT"])
    for port in (int(env["EVENTPIPE_HTTP_PORT"]), metrics_port + 1, metrics_port + 2):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
