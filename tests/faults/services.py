"""Private services that a fault may break without touching the shared ones: a Kafka broker and a
PostgreSQL cluster on free ports in a temp dir, and a small loop-mounted filesystem for a SQLite sink
(to fill up, or to make read-only)."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from pipeline import kafka_cluster, kafka_local
from pipeline.settings import Settings
from tests.conftest import IN_CI
from tests.ports import free_node_ports, free_port, free_port_run
from tests.waiting import wait_until


def unavailable(message: str) -> NoReturn:
    """What a fault cannot run without: a failure in CI, a skip (saying why) elsewhere."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PrivateBroker:
    """A single-node KRaft broker of our own (`pipeline.kafka_local`), to stop and kill."""

    def __init__(self, data_dir: Path) -> None:
        self.bootstrap = f"127.0.0.1:{free_port_run(1)}"
        self.settings = Settings(kafka_bootstrap=self.bootstrap, data_dir=str(data_dir), kafka_heap="384m")
        self._layout = kafka_local.Layout.from_settings(self.settings)

    def start(self) -> None:
        kafka_local.start(self.settings)

    def stop(self) -> None:
        """SIGTERM, and wait until it has exited (a controlled shutdown)."""
        kafka_local.stop(self.settings)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        pid = kafka_local.read_pid(self._layout)
        assert pid is not None, "the private broker is not running"
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # started by this process: reap it, or the pid stays "alive"
        self._layout.pid_file.unlink(missing_ok=True)

    def close(self) -> None:
        if kafka_local.read_pid(self._layout) is None:
            return
        try:
            self.stop()
        except kafka_local.KafkaLocalError:
            self.kill()


class PrivateCluster:
    """A three-node KRaft cluster of our own (`pipeline.kafka_cluster`) on free ports: nodes to kill,
    stop, pause (SIGSTOP: a hung broker) and start again."""

    NODES = 3

    def __init__(self, data_dir: Path) -> None:
        base = free_node_ports(self.NODES)
        self.settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{base}", data_dir=str(data_dir), kafka_heap="256m"
        )
        self.bootstrap = kafka_cluster.bootstrap_of(self.settings, self.NODES)
        self._layouts = {n: kafka_cluster.node_layout(self.settings, n) for n in range(1, self.NODES + 1)}

    def start(self) -> None:
        """Start the nodes that are down and wait until every node answers."""
        kafka_cluster.start(self.settings, self.NODES)

    def pid(self, node: int) -> int:
        pid = kafka_local.read_pid(self._layouts[node])
        assert pid is not None, f"node {node} is not running"
        return pid

    def kill(self, node: int) -> None:
        """SIGKILL, and wait until it is gone."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self._layouts[node].pid_file.unlink(missing_ok=True)

    def stop(self, node: int) -> None:
        """SIGTERM (a controlled shutdown: leadership moves first), and wait until it has exited."""
        pid = self.pid(node)
        os.kill(pid, signal.SIGTERM)

        def stopped() -> bool:
            kafka_local.reap(pid)
            return kafka_local.read_pid(self._layouts[node]) is None

        wait_until(stopped, kafka_local.STOP_TIMEOUT_SECONDS, f"node {node} to stop after SIGTERM")
        self._layouts[node].pid_file.unlink(missing_ok=True)

    def pause(self, node: int) -> None:
        os.kill(self.pid(node), signal.SIGSTOP)

    def resume(self, node: int) -> None:
        os.kill(self.pid(node), signal.SIGCONT)

    async def fully_replicated(self, topics: Sequence[str]) -> bool:
        """Every partition of the topics has all its replicas in sync (what a rolling restart waits
        for before the next node), in every node's view: a node resumed from a pause answers from its
        metadata of before the pause for a moment, and calls the partitions it led in sync."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            await client.bootstrap()
            views = [
                (await client.send(node, MetadataRequest(list(topics)))).to_object()["topics"]
                for node in sorted(self._layouts)
            ]
        except KafkaError:
            return False
        finally:
            await client.close()
        partitions = [p for topics_seen in views for t in topics_seen for p in t["partitions"]]
        return bool(partitions) and all(len(p["isr"]) == len(p["replicas"]) for p in partitions)

    def close(self) -> None:
        for node in self._layouts:
            if kafka_local.read_pid(self._layouts[node]) is not None:
                self.resume(node)  # a paused node cannot shut down
        try:
            kafka_cluster.stop(self.settings)
        except kafka_local.KafkaLocalError:
            for node in self._layouts:
                if kafka_local.read_pid(self._layouts[node]) is not None:
                    self.kill(node)


def _pg_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name.split(".")[0])
    )
    if found:
        return Path(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temp dir, a free port), to stop and restart. Run as
    the `postgres` user when we are root, as scripts/services.sh does: the server refuses root."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            unavailable("PostgreSQL's binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
        self._bin = bindir
        # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="eventpipe-fault-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")

    def _run(self, *args: str) -> None:
        argv = [*args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{' '.join(argv)}: {result.stdout}{result.stderr}"

    def init(self) -> None:
        self._run(
            str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
        )

    def start(self, extra_options: str = "") -> None:
        """`extra_options`: more server settings, e.g. "-c ssl=on -c ssl_cert_file=..."."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {extra_options}"
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"),
            "-w", "-t", "90", "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str) -> None:
        """`fast` disconnects the sessions and shuts down cleanly; `immediate` is a crash."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "90", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class SmallDisk:
    """A small ext4 filesystem on a loop device, mounted on a temp dir. It fills up with a ballast
    file; and its files can be made immutable, which ext4 enforces on descriptors already open too
    (`mount -o remount,ro` is refused while a consumer holds the database open for writing)."""

    def __init__(self, root: Path, size_mb: int = 48) -> None:
        self.image = root / "disk.img"
        self.path = root / "mnt"
        self.ballast = self.path / "ballast"
        self._size_mb = size_mb
        self._immutable: list[Path] = []

    def mount(self) -> None:
        if os.geteuid() != 0:
            unavailable("mounting a small filesystem for the SQLite disk faults needs root")
        missing = [tool for tool in ("mount", "umount", "mkfs.ext4", "chattr") if shutil.which(tool) is None]
        if missing:
            unavailable(f"{', '.join(missing)} missing: install util-linux and e2fsprogs (.ci/run does)")
        self.path.mkdir(parents=True)
        with self.image.open("wb") as f:
            f.truncate(self._size_mb * 1024 * 1024)
        # 4 KiB blocks and no reserved blocks: full means full, for root too.
        mkfs = subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", str(self.image)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert mkfs.returncode == 0, mkfs.stderr
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(self.image), str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            unavailable(f"cannot loop-mount a small filesystem here: {mounted.stderr.strip()}")

    def fill(self) -> int:
        """Write the ballast until the filesystem has no block left; returns its size in bytes."""
        written = 0
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (1024 * 1024, 4096):
                block = b"\0" * chunk
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.ballast.unlink()

    def make_immutable(self, *paths: Path) -> None:
        self._chattr("+i", *paths)
        self._immutable.extend(paths)

    def make_mutable(self) -> None:
        if self._immutable:
            self._chattr("-i", *self._immutable)
            self._immutable.clear()

    @staticmethod
    def _chattr(flag: str, *paths: Path) -> None:
        result = subprocess.run(
            ["chattr", flag, *map(str, paths)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.make_mutable()
        if os.path.ismount(self.path):
            done = subprocess.run(["umount", str(self.path)], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
