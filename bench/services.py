"""The services a bench run needs, private to the run: a Kafka broker (pipeline.kafka_local, its own
data directory and free ports) unless one is given, and a PostgreSQL database — a fresh database in the
server given by --pg, else a throw-away cluster of Debian's postgresql, else none (PG figures skipped)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pipeline import kafka_local
from pipeline.settings import Settings


def free_port(pair: bool = False) -> int:
    """A free loopback port; with pair=True, one whose successor is free too (the broker's controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair:
            return port
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair found")


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int | None  # the private broker's process, for its CPU accounting; a given one may be anywhere


@contextlib.contextmanager
def kafka(given: str | None, workdir: Path) -> Iterator[Broker]:
    """The broker the run uses."""
    if given:
        yield Broker(given, None)
        return
    port = free_port(pair=True)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", data_dir=str(workdir), kafka_heap="1g")
    print(f"  {kafka_local.start(settings)}", flush=True)
    pid = kafka_local.read_pid(kafka_local.Layout.from_settings(settings))
    try:
        yield Broker(settings.kafka_bootstrap, pid)
    finally:
        with contextlib.suppress(kafka_local.KafkaLocalError):
            kafka_local.stop(settings)


@dataclass
class Postgres:
    """A server the bench may create databases in."""

    admin_dsn: str
    note: str

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    async def create_database(self, prefix: str = "bench") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name or 0))
    if found:
        return found[-1]
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _as_owner(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres(given: str | None, skip: bool) -> Iterator[Postgres | None]:
    if skip:
        yield None
        return
    if given:
        yield Postgres(given, "given by --pg")
        return
    bindir = _pg_bindir()
    if bindir is None:
        print("  PostgreSQL not installed: PG figures skipped (apt-get install postgresql, or --pg DSN)")
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="eventpipe-bench-pg-"))
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=50"
        subprocess.run(
            _as_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-o", opts, "start"]
            ),
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"  private PostgreSQL failed to start ({exc}): PG figures skipped")
        shutil.rmtree(tmp, ignore_errors=True)
        yield None
        return
    print(f"  PostgreSQL (private cluster) on 127.0.0.1:{port}", flush=True)
    try:
        yield Postgres(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", "private cluster, default settings"
        )
    finally:
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
