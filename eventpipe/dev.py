"""`eventpipe dev`: the whole pipeline on this machine in the foreground — local Kafka (started if
needed), topics, a receiver, two consumers and the SQLite sink, with a demo tenant whose keys are
printed as ready-to-paste curl lines. Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline import kafka_local, tenants, topics
from pipeline.settings import Settings

DEMO_TENANT = "demo"
DEMO_PARTNER_ID = "608423a9b126ac6ab3f8f0a5"
CONSUMERS = 2


@dataclass(frozen=True)
class DemoKeys:
    api_key: str
    jwt_secret: str


def demo_keys(state_dir: Path) -> DemoKeys:
    """Keys kept between runs, so pasted curl lines keep working. The file is also what `eventpipe
    loadgen --credentials` reads, hence the tenant and partner id beside the keys."""
    path = state_dir / "demo-keys.json"
    if path.exists():
        data = json.loads(path.read_text())
        keys = DemoKeys(data["api_key"], data["jwt_secret"])
    else:
        keys = DemoKeys("ep_demo_" + secrets.token_hex(12), secrets.token_hex(32))
    state_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "tenant": DEMO_TENANT,
        "api_key": keys.api_key,
        "partner_id": DEMO_PARTNER_ID,
        "jwt_secret": keys.jwt_secret,
    }
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return keys


def write_tenants(state_dir: Path, keys: DemoKeys) -> Path:
    path = state_dir / "tenants.toml"
    path.write_text(
        "# Written by `eventpipe dev`: the demo tenant. Keys in clear are in demo-keys.json beside it.\n"
        "[[tenants]]\n"
        f'id = "{DEMO_TENANT}"\n'
        f'api_keys = ["{tenants.key_digest(keys.api_key)}"]\n'
        f'retailrocket_partner_ids = ["{DEMO_PARTNER_ID}"]\n'
        f'jwt_secrets = ["{keys.jwt_secret}"]\n'
    )
    path.chmod(0o600)
    return path


def curl_lines(base: str, keys: DemoKeys, now: datetime) -> list[str]:
    jwt = tenants.mint_jwt(DEMO_TENANT, keys.jwt_secret)
    at = now.isoformat(timespec="seconds")
    ms = int(now.timestamp() * 1000)
    topsort = json.dumps(
        {
            "clicks": [
                {
                    "id": f"click-{ms}",
                    "occurredAt": at,
                    "opaqueUserId": "user-1",
                    "entity": {"id": "p-1", "type": "product"},
                }
            ]
        }
    )
    rr = json.dumps({"sessionExternalId": "60842392e4881c65e6c5e423", "productId": 123456, "timestamp": at})
    dfinery = json.dumps(
        {
            "event_attributes": {
                "event_id": str(uuid.uuid4()),
                "event_name": "purchase",
                "event_datetime": ms,
                "order_id": "o-1",
                "order_sales": 12.95,
            },
            "user_attributes": {"user_id": "user-1"},
        }
    )
    impression = json.dumps(
        {"events": [{"event_key": "imp", "target_id": "1111", "cookie_id": "c-1", "server_time": ms // 1000}]}
    )
    json_h = "-H 'Content-Type: application/json'"
    return [
        f"curl -i {json_h} -H 'Authorization: Bearer {keys.api_key}' {base}/v2/events -d '{topsort}'",
        f"curl -i {json_h} '{base}/1.0/view?apiKey={keys.api_key}&partnerId={DEMO_PARTNER_ID}' -d '{rr}'",
        f"curl -i {json_h} -H 'Authorization: Bearer {keys.api_key}' {base}/api/v1/events -d '{dfinery}'",
        f"curl -i {json_h} -H 'Authorization: Bearer {jwt}' {base}/upload/impression -d '{impression}'",
    ]


def program(environ: Mapping[str, str]) -> str:
    """How the shell that started this runs eventpipe: `eventpipe` when its PATH finds this one, else
    the script beside this Python (`make dev` runs .venv/bin/eventpipe without activating the venv)."""
    beside = Path(sys.executable).parent / "eventpipe"
    found = shutil.which("eventpipe", path=environ.get("PATH"))
    if not beside.exists():
        return "eventpipe" if found else f"{sys.executable} -m eventpipe"
    if found and Path(found).resolve() == beside.resolve():
        return "eventpipe"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL we built
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(settings: Settings, environ: Mapping[str, str]) -> int:
    # Ctrl-C and SIGTERM both stop everything, even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    state_dir = Path(settings.data_dir).resolve() / "dev"
    broker = kafka_local.start(settings)
    print(broker)
    try:
        return _run_pipeline(settings, environ, state_dir)
    finally:
        # The broker is stopped only when this run started it: one already running stays up.
        if broker.started:
            print(kafka_local.stop(settings))


def _run_pipeline(settings: Settings, environ: Mapping[str, str], state_dir: Path) -> int:
    for line in asyncio.run(topics.ensure(settings)):
        print(line)
    keys = demo_keys(state_dir)
    tenants_path = write_tenants(state_dir, keys)
    env = dict(environ)
    env["EVENTPIPE_TENANTS"] = str(tenants_path)
    env.setdefault("EVENTPIPE_LOG_FORMAT", "json")
    exe = [sys.executable, "-m", "eventpipe"]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def spawn(name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("ab") as log:
            # Own session: a terminal's Ctrl-C reaches only us, and each child gets exactly one SIGTERM
            # (a second signal would make it exit without finishing its batch).
            proc = subprocess.Popen(
                [*exe, *args],
                env={**env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append((name, proc))
        return proc

    def stop_all() -> None:
        # One Ctrl-C stops everything; a second one while draining would cut the consumers' batches.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs:
            try:
                proc.wait(timeout=settings.drain_seconds + 10)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()

    base = f"http://{settings.http_host}:{settings.http_port}"
    # Each consumer serves /metrics on its own port: the ones after EVENTPIPE_METRICS_PORT (9401, 9402).
    consumer_ports = [settings.metrics_port + 1 + i for i in range(CONSUMERS)]
    try:
        receiver = spawn("receiver", ["receiver"], {})
        consumers = [
            spawn(f"consumer-{i + 1}", ["consumer"], {"EVENTPIPE_METRICS_PORT": str(port)})
            for i, port in enumerate(consumer_ports)
        ]
        if not wait_ready(f"{base}/readyz", receiver, 60):
            print(f"receiver did not become ready; see {logs / 'receiver.log'}", file=sys.stderr)
            return 1
        for proc, port in zip(consumers, consumer_ports, strict=True):
            if not wait_ready(f"http://127.0.0.1:{port}/readyz", proc, 60):
                print(f"a consumer did not become ready; see {logs}", file=sys.stderr)
                return 1
        sink = settings.sink
        print(f"\neventpipe is running. Receiver {base}  (metrics {base}/metrics)")
        print("Consumers: " + ", ".join(f"http://127.0.0.1:{p}/metrics" for p in consumer_ports))
        print(f"Sink: {sink}   Logs: {logs}   Demo tenant: {DEMO_TENANT}\n")
        print("Try one event per vendor:\n")
        for line in curl_lines(base, keys, datetime.now(UTC)):
            print(line + "\n")
        eventpipe = program(environ)
        print("Then watch the rows land (Ctrl-C stops watching; --json shows every column):\n")
        print(f"{eventpipe} events --follow\n")
        keys_file = state_dir / "demo-keys.json"
        print(f"Mixed traffic for 30 s: {eventpipe} loadgen --url {base} --credentials {keys_file}\n")
        print("Ctrl-C stops everything.")
        while all(proc.poll() is None for _, proc in procs):
            time.sleep(0.5)
        dead = [name for name, proc in procs if proc.poll() is not None]
        print(f"{', '.join(dead)} exited; stopping. See {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        stop_all()
