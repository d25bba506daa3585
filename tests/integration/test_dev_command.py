"""The README's first command as a user runs it: `eventpipe dev` brings the pipeline up, the curl lines
it prints land rows in SQLite, the `eventpipe events` line it prints shows them (a fresh machine has
no sqlite3 program), and Ctrl-C stops every process it started."""

from __future__ import annotations

import shlex
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.integration.dev_process import running_dev
from tests.ports import free_port_run
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


def test_dev_runs_the_pipeline_and_its_curl_lines_land_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_dev(kafka_bootstrap, tmp_path) as dev:
        curls = [line for line in dev.text().splitlines() if line.startswith("curl ")]
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

        text = dev.text()
        assert "sqlite3" not in text
        (printed,) = [line for line in text.splitlines() if line.endswith(" events --follow")]
        shown = subprocess.run(
            shlex.split(printed.removesuffix(" --follow")),
            env=dev.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        header, *rows = shown.stdout.splitlines()
        assert header.split()[:4] == ["stored_at", "occurred_at", "tenant", "source"]
        assert sorted(row.split()[3] for row in rows) == every_vendor
    assert dev.stop() == 0, dev.text()
    # every child stopped with it: nothing listens any more on the receiver's or consumers' ports
    for port in (dev.http_port, *dev.consumer_ports):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_leaves_a_broker_that_was_already_running(kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_dev(kafka_bootstrap, tmp_path) as dev:
        assert "Kafka already" in dev.text()
    assert dev.stop() == 0, dev.text()
    assert _answers(int(kafka_bootstrap.rpartition(":")[2])), "the broker dev found running was stopped"


def test_ctrl_c_stops_the_broker_dev_started(kafka_bootstrap: str, tmp_path: Path) -> None:
    # No broker on this port pair: dev starts its own (data under tmp_path) and must stop it on Ctrl-C.
    port = free_port_run(1)
    with running_dev(f"127.0.0.1:{port}", tmp_path) as dev:
        assert "Kafka started" in dev.text()
        pid = int((tmp_path / "kafka" / "kafka.pid").read_text())
    assert dev.stop() == 0, dev.text()
    assert "Kafka stopped" in dev.text()
    assert not _answers(port), "the broker dev started still listens"
    assert not Path(f"/proc/{pid}").exists(), f"the broker dev started (pid {pid}) is still running"
