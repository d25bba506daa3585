"""`eventpipe kafka start --nodes 3` on ports and a data dir of its own: three KRaft nodes come up,
`status --json` describes them, a second start after a node was killed starts that node alone, and
`stop` stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_node_ports
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


def eventpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def nodes(env: dict[str, str]) -> list[dict[str, Any]]:
    status = eventpipe(env, "kafka", "status", "--json")
    found: list[dict[str, Any]] = json.loads(status.stdout)["nodes"]
    assert status.returncode == (0 if all(n["running"] for n in found) else 1), status.stderr
    return found


def test_three_nodes_start_idempotently_and_stop(tmp_path: Path) -> None:
    base = free_node_ports(3)
    env = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{base}",
        "EVENTPIPE_DATA_DIR": str(tmp_path),
        "EVENTPIPE_KAFKA_HEAP": "256m",
    }
    try:
        started = eventpipe(env, "kafka", "start", "--nodes", "3")
        assert started.returncode == 0, started.stderr
        assert "started nodes 1, 2, 3" in started.stdout
        bootstraps = [f"127.0.0.1:{base + 100 * i}" for i in range(3)]
        assert f"bootstrap {','.join(bootstraps)}" in started.stdout
        first = nodes(env)
        assert [(n["node_id"], n["bootstrap"], n["running"]) for n in first] == [
            (1, bootstraps[0], True),
            (2, bootstraps[1], True),
            (3, bootstraps[2], True),
        ]
        assert all(isinstance(n["pid"], int) for n in first)
        for n in (1, 2, 3):
            assert (tmp_path / "kafka" / f"node-{n}" / "data" / "meta.properties").exists()

        os.kill(first[1]["pid"], signal.SIGKILL)
        wait_until(lambda: not nodes(env)[1]["running"], 30, "node 2 to be reported down")
        again = eventpipe(env, "kafka", "start", "--nodes", "3")
        assert again.returncode == 0, again.stderr
        assert "started nodes 2 in" in again.stdout
        second = nodes(env)
        assert all(n["running"] for n in second)
        assert second[0]["pid"] == first[0]["pid"] and second[2]["pid"] == first[2]["pid"]
        assert second[1]["pid"] != first[1]["pid"]

        idle = eventpipe(env, "kafka", "start", "--nodes", "3")
        assert idle.returncode == 0 and "already running" in idle.stdout, idle.stderr
        assert [n["pid"] for n in nodes(env)] == [n["pid"] for n in second]
    finally:
        stopped = eventpipe(env, "kafka", "stop")
    assert stopped.returncode == 0 and "Kafka stopped" in stopped.stdout, stopped.stderr
    down = nodes(env)
    assert [(n["pid"], n["running"]) for n in down] == [(None, False)] * 3
