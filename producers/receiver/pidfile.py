"""The receiver's record in the data directory (`receiver-<port>.json`): which process to signal for a
tenants reload, how many workers should confirm it, and the outcome of the last reload. Written by the
receiver (the parent under `--workers N`) once it handles SIGHUP, replaced atomically, removed on
exit; read by `eventpipe tenants reload`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec


class ReloadStatus(msgspec.Struct, frozen=True):
    seq: int = 0  # reload requests judged so far (SIGHUPs)
    generation: int = 0  # the request whose file is served; 0 = the file read at start
    outcome: str = "started"  # started, reloaded or refused
    reason: str | None = None  # why the last request was refused
    tenants: int = 0  # counts of what the served file holds (never the keys themselves)
    api_keys: int = 0
    jwt_secrets: int = 0


class ReceiverRecord(msgspec.Struct, frozen=True):
    pid: int
    started: int  # the process's start time in clock ticks since boot: tells a reused pid apart
    host: str
    port: int
    tls: bool
    workers: int
    tenants_file: str
    reload: ReloadStatus = ReloadStatus()


def path_for(data_dir: str | Path, port: int) -> Path:
    return Path(data_dir) / f"receiver-{port}.json"


def process_started(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time), or None when no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    return int(stat.rpartition(")")[2].split()[19])


def alive(record: ReceiverRecord) -> bool:
    """The process that wrote the record still runs (the same process, not a later one with its pid)."""
    return process_started(record.pid) == record.started


def read(path: Path) -> ReceiverRecord | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ReceiverRecord)
    except FileNotFoundError:
        return None


def write(path: Path, record: ReceiverRecord) -> None:
    """Replace the record atomically: a reader sees the old one or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(msgspec.json.encode(record))
    os.replace(temporary, path)


def remove(path: Path, pid: int) -> None:
    """Remove the record if it is still this process's (another receiver may have taken the port's
    record since)."""
    record = None
    with contextlib.suppress(msgspec.DecodeError, OSError):
        record = read(path)
    if record is not None and record.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
