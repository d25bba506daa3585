"""`eventpipe kafka start|status|stop` twice in a row on a broker of its own (own port and data
directory), and a second start while running is harmless."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port_run

pytestmark = pytest.mark.network


def eventpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_start_status_stop_twice(tmp_path: Path) -> None:
    port = free_port_run(1)
    env = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "EVENTPIPE_DATA_DIR": str(tmp_path),
    }
    for _round in range(2):
        started = eventpipe(env, "kafka", "start")
        assert started.returncode == 0, started.stderr
        assert "started" in started.stdout
        again = eventpipe(env, "kafka", "start")
        assert again.returncode == 0 and "already running" in again.stdout
        status = eventpipe(env, "kafka", "status")
        assert status.returncode == 0 and "resident memory" in status.stdout
        stopped = eventpipe(env, "kafka", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        down = eventpipe(env, "kafka", "status")
        assert down.returncode == 1 and "not running" in down.stdout
    assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
