"""The local single-node Kafka broker (KRaft, loopback), assembled from Maven Central jars: fetch,
format, start in the background, wait until a client connects, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from pipeline.errors import ServiceMissing
from pipeline.settings import Settings

KAFKA_VERSION = "3.9.1"
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0


class KafkaLocalError(Exception):
    """The local broker could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    libs: Path
    data: Path
    log_dirs: Path
    config: Path
    pid_file: Path
    log_file: Path
    host: str
    port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        home = Path(settings.kafka_home or Path.home() / ".cache" / "eventpipe").expanduser()
        data = Path(settings.data_dir).expanduser().resolve() / "kafka"
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        return cls(
            libs=home / f"kafka-{KAFKA_VERSION}" / "libs",
            data=data,
            log_dirs=data / "data",
            config=data / "server.properties",
            pid_file=data / "kafka.pid",
            log_file=data / "kafka.log",
            host=host or "127.0.0.1",
            port=int(port),
        )


def java_version() -> int:
    java = shutil.which("java")
    if java is None:
        raise ServiceMissing(
            "Java 17 or newer is needed for the local Kafka broker: install a JDK (e.g. openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise ServiceMissing(f"cannot read the Java version from: {out.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise ServiceMissing(f"Java {major} found; the Kafka broker needs Java 17 or newer")
    return major


def fetch_jars(layout: Layout) -> bool:
    """Copy the broker's jars from Maven Central into the cache. Returns False when already there."""
    marker = layout.libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if marker.exists():
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceMissing("Maven (mvn) is needed once, to fetch the Kafka jars: install maven")
    tmp = layout.libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(DEPLOY_DIR / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaLocalError(
            f"fetching the Kafka jars failed: {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    shutil.rmtree(layout.libs, ignore_errors=True)
    tmp.rename(layout.libs)
    return True


def render_config(layout: Layout, overrides: Mapping[str, str] | None = None) -> None:
    """deploy/kafka/server.properties for this layout's ports, with `overrides` replacing the values of
    the keys they name (what a node of a cluster changes)."""
    text = (DEPLOY_DIR / "server.properties").read_text()
    text = text.replace("127.0.0.1:9093", f"{layout.host}:{layout.port + 1}")
    text = text.replace("127.0.0.1:9092", f"{layout.host}:{layout.port}")
    pending = dict(overrides or {})
    lines = []
    for line in text.splitlines():
        key = line.partition("=")[0].strip()
        if not line.startswith("#") and key in pending:
            line = f"{key}={pending.pop(key)}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in pending.items()]
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.config.write_text("\n".join(lines) + f"\nlog.dirs={layout.log_dirs}\n")


def java_command(layout: Layout, heap: str, *args: str) -> list[str]:
    return [
        "java",
        "-Xms128m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{DEPLOY_DIR / 'log4j.properties'}",
        "-cp",
        f"{layout.libs}/*",
        *args,
    ]


def new_cluster_id(layout: Layout, heap: str) -> str:
    return (
        subprocess.run(
            java_command(layout, heap, "kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )


def format_storage(
    layout: Layout, heap: str, cluster_id: str | None = None, extra_args: Sequence[str] = ()
) -> None:
    """Once per data dir; the nodes of a cluster share one `cluster_id`. `extra_args` go to Kafka's
    StorageTool (e.g. `--add-scram` to create SCRAM users before the first start)."""
    if (layout.log_dirs / "meta.properties").exists():
        return
    cluster_id = cluster_id or new_cluster_id(layout, heap)
    result = subprocess.run(
        java_command(
            layout,
            heap,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(layout.config),
            *extra_args,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise KafkaLocalError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def read_pid(layout: Layout) -> int | None:
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return None if zombie(pid) else pid


def zombie(pid: int) -> bool:
    """A killed broker whose parent has not reaped it yet still answers kill(0): it is down."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


async def _client_connects(bootstrap: str, wait_seconds: float) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), wait_seconds)
        await asyncio.wait_for(admin.describe_cluster(), wait_seconds)
        return True
    except Exception:  # any failure means "not yet": the caller polls until its deadline
        return False
    finally:
        # closing a client that never connected may fail; the poll goes on either way
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def quiet_aiokafka() -> Iterator[None]:
    # While polling a starting broker every refused connection is expected; aiokafka would log each.
    quiet = logging.getLogger("aiokafka")
    previous = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quiet.setLevel(previous)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def client_connects(bootstrap: str, timeout: float = 3.0) -> bool:
    with quiet_aiokafka():
        return asyncio.run(_client_connects(bootstrap, timeout))


@dataclass(frozen=True)
class Started:
    """What `start` did: `started` is False when a broker was already there, which the caller must
    then leave running when it stops what it started itself."""

    message: str
    started: bool

    def __str__(self) -> str:
        return self.message


def start(settings: Settings, echo: bool = True) -> Started:
    layout = Layout.from_settings(settings)
    pid = read_pid(layout)
    bootstrap = f"{layout.host}:{layout.port}"
    if pid is not None:
        if client_connects(bootstrap):
            return Started(f"Kafka already running (pid {pid}) on {bootstrap}", started=False)
        raise KafkaLocalError(
            f"Kafka process {pid} exists but {bootstrap} does not answer; see {layout.log_file}"
        )
    if _listening(layout.host, layout.port):
        # A broker we did not start (another data dir, a user's own Kafka): use it rather than clash.
        # On a loaded machine its first answer can take longer than a quick probe allows.
        if client_connects(bootstrap, timeout=10.0):
            return Started(
                f"Kafka already reachable on {bootstrap} (not started from this data dir); using it",
                started=False,
            )
        raise KafkaLocalError(f"something listens on {bootstrap} but does not answer as a Kafka broker")
    java_version()
    began = time.monotonic()
    fetched = fetch_jars(layout)
    fetch_s = time.monotonic() - began
    render_config(layout)
    format_storage(layout, settings.kafka_heap)
    began = time.monotonic()
    proc = launch(layout, settings.kafka_heap)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                layout.pid_file.unlink(missing_ok=True)
                raise KafkaLocalError(
                    f"Kafka exited with {proc.returncode} during start:\n{tail(layout.log_file)}"
                )
            if client_connects(bootstrap, timeout=2.0):
                took = time.monotonic() - began
                fetched_note = f"; jars fetched in {fetch_s:.1f}s" if fetched else ""
                message = f"Kafka started (pid {proc.pid}) on {bootstrap} in {took:.1f}s{fetched_note}"
                return Started(message, started=True)
            time.sleep(0.25)
    except BaseException:
        # Ctrl-C while the broker comes up must not leave it running behind the caller.
        terminate(proc, layout)
        raise
    terminate(proc, layout)
    raise KafkaLocalError(
        f"Kafka did not accept a client within {START_TIMEOUT_SECONDS:.0f}s:\n{tail(layout.log_file)}"
    )


def launch(layout: Layout, heap: str) -> subprocess.Popen[bytes]:
    """The broker in the background (its own session: Ctrl-C on a terminal does not reach it), its
    pid in the layout's pid file."""
    with layout.log_file.open("ab") as log:
        proc = subprocess.Popen(
            java_command(layout, heap, "kafka.Kafka", str(layout.config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    layout.pid_file.write_text(str(proc.pid))
    return proc


def terminate(proc: subprocess.Popen[bytes], layout: Layout) -> None:
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    layout.pid_file.unlink(missing_ok=True)


def stop(settings: Settings) -> str:
    layout = Layout.from_settings(settings)
    pid = read_pid(layout)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        return "Kafka is not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            layout.pid_file.unlink(missing_ok=True)
            return f"Kafka stopped (pid {pid})"
        reap(pid)
        time.sleep(0.2)
    raise KafkaLocalError(
        f"Kafka (pid {pid}) did not stop within {STOP_TIMEOUT_SECONDS:.0f}s of SIGTERM; "
        f"inspect {layout.log_file}, then `kill -9 {pid}` if it is stuck"
    )


def status(settings: Settings) -> tuple[bool, str]:
    layout = Layout.from_settings(settings)
    pid = read_pid(layout)
    bootstrap = f"{layout.host}:{layout.port}"
    if pid is None:
        return False, f"Kafka is not running (no live pid in {layout.pid_file})"
    if client_connects(bootstrap):
        rss = rss_mib(pid)
        return True, f"Kafka running (pid {pid}) on {bootstrap}, resident memory {rss:.0f} MiB"
    return False, f"Kafka process {pid} is up but {bootstrap} does not answer"


def reap(pid: int) -> None:
    # The broker may be our child when started from the same process (tests, `eventpipe dev`).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
