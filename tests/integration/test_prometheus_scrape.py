"""Debian's real Prometheus scrapes a running `eventpipe dev` (receiver, two consumers, SQLite) with the
repository's own scrape config and alert rules, while traffic of every kind flows: every target is up,
every eventpipe metric family the dashboard uses is stored, and every query of the provisioned Grafana
dashboard returns a number through Prometheus' HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboards
from tests.integration.dev_process import DevProcess, running_dev
from tests.ports import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.local.yml"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# What Grafana's $__rate_interval becomes at the local config's 2 s scrape interval: at least four
# scrapes, so rate() always has two samples inside the window.
MACROS = {"$__rate_interval": "20s", "$__interval": "2s", "$__range": "1m"}


@dataclass
class Traffic:
    """Requests of every kind against the demo tenant until stopped: stored, duplicate, late (dead
    letter), schema-invalid (400) and unauthenticated (401), so every dashboard panel has data."""

    base: str
    api_key: str
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: dict[int, int] = field(default_factory=dict)

    def _post(self, path: str, body: dict[str, Any], key: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback URL built by the test
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
                status = reply.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def run(self) -> None:
        while not self.stop.is_set():
            now = datetime.now(UTC)
            click = {"id": uuid.uuid4().hex, "occurredAt": now.isoformat(), "opaqueUserId": "u-1"}
            click["entity"] = {"id": "p-1", "type": "product"}
            self._post("/v2/events", {"clicks": [click]}, self.api_key)
            self._post("/v2/events", {"clicks": [click]}, self.api_key)
            late = {**click, "id": uuid.uuid4().hex, "occurredAt": (now - timedelta(hours=72)).isoformat()}
            self._post("/v2/events", {"clicks": [late]}, self.api_key)
            self._post("/v2/events", {"clicks": [{"id": ""}]}, self.api_key)
            self._post("/v2/events", {"clicks": [click]}, "not-a-key")
            self.stop.wait(0.1)  # pacing of the stream, not a wait for a condition


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if IN_CI:
            pytest.fail("Debian's prometheus is not installed (.ci/run installs it)")
        pytest.skip(
            "Debian's prometheus is not installed: `apt-get install -y --no-install-recommends prometheus`"
        )
    return found


def _query(api: str, path: str, **params: str) -> Any:
    url = f"{api}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback URL
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def dev(kafka_bootstrap: str, tmp_path: Path) -> Iterator[DevProcess]:
    with running_dev(kafka_bootstrap, tmp_path, batch_max_wait_ms="100") as running:
        yield running


def _prometheus_config(dev: DevProcess, tmp_path: Path) -> Path:
    """The repository's local config with its targets moved to the ports this run uses."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    targets = {
        "eventpipe-receiver": [f"127.0.0.1:{dev.http_port}"],
        "eventpipe-consumer": [f"127.0.0.1:{port}" for port in dev.consumer_ports],
    }
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    config["rule_files"] = [str(LOCAL_CONFIG.parent / name) for name in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus(dev: DevProcess, tmp_path: Path) -> Iterator[str]:
    binary = _prometheus_binary()
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={_prometheus_config(dev, tmp_path)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{api}/-/ready", timeout=2) as reply:  # noqa: S310
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_until(ready, 60, lambda: (tmp_path / "prometheus.log").read_text()[-2000:])
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_prometheus_scrapes_the_pipeline_and_every_dashboard_query_has_data(
    dev: DevProcess, prometheus: str, tmp_path: Path
) -> None:
    keys = json.loads((tmp_path / "dev" / "demo-keys.json").read_text())
    traffic = Traffic(f"http://127.0.0.1:{dev.http_port}", keys["api_key"])
    sender = threading.Thread(target=traffic.run, daemon=True)
    sender.start()
    try:

        def targets_up() -> bool:
            active = _query(prometheus, "/api/v1/targets", state="active")["activeTargets"]
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        wait_until(targets_up, 60, lambda: _query(prometheus, "/api/v1/targets", state="active"))

        # The rules of alerts.yml were loaded from the repository's own file.
        groups = _query(prometheus, "/api/v1/rules")["groups"]
        assert sum(len(g["rules"]) for g in groups) >= 4

        exprs = [
            (title, dashboards.expand_macros(expr, MACROS))
            for title, expr in dashboards.dashboard_exprs(dashboards.load())
        ]
        missing: dict[str, str] = {}

        def every_query_has_a_number() -> bool:
            missing.clear()
            for title, expr in exprs:
                # `x == x` drops NaN, which is what a quantile over an idle histogram gives.
                result = _query(prometheus, "/api/v1/query", query=f"({expr}) == ({expr})")["result"]
                if not result:
                    missing[title] = expr
            return not missing

        wait_until(every_query_has_a_number, 120, lambda: f"no data: {missing}; sent {traffic.statuses}")
    finally:
        traffic.stop.set()
        sender.join(timeout=30)

    # The traffic really was of every kind the panels break down.
    assert {204, 400, 401} <= set(traffic.statuses), traffic.statuses
    names = set(_query(prometheus, "/api/v1/label/__name__/values"))
    eventpipe = {n for n in names if n.startswith("eventpipe_")}
    for title, expr in exprs:
        used = {n for n in eventpipe if n in expr}
        assert used, f"{title}: {expr} selects no eventpipe series Prometheus stored"
