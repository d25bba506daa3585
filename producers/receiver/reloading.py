"""Reloading the tenants file on SIGHUP. A serving process (the only one, or each worker of
`--workers N`) judges each request and swaps its app's tenants, logging `tenants_reloaded` or
`tenants_reload_refused` and counting it; the process that owns the receiver's record (the only one,
or the parent) keeps the outcome there for `eventpipe tenants reload` to read."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import structlog

from producers.receiver import pidfile
from producers.receiver.app import ReceiverState
from producers.receiver.snapshots import Snapshots
from producers.receiver.tenants_reload import Outcome, ReloadRefused, ServedTenants, read_file

log = structlog.get_logger("eventpipe.receiver")

Request = tuple[int, bytes | ReloadRefused]


class Requests(Protocol):
    def after(self, seq: int) -> Iterable[Request]:
        """The reload requests after `seq` that this process has not judged yet, oldest first."""
        ...

    def settled(self, outcome: Outcome) -> None:
        """Called with each request's outcome once this process has applied it."""
        ...


class Reloader:
    """One serving process's side: judge each request, and serve the accepted file from the next
    request on."""

    def __init__(self, state: ReceiverState, served: ServedTenants, requests: Requests) -> None:
        self._state = state
        self._served = served
        self._requests = requests
        state.metrics.tenants_generation.set(served.generation)

    def reload(self) -> None:
        """The SIGHUP handler (run by the event loop, between requests)."""
        for seq, content in self._requests.after(self._served.seq):
            self._requests.settled(self._apply(seq, content))

    def _apply(self, seq: int, content: bytes | ReloadRefused) -> Outcome:
        outcome = self._served.judge(seq, content)
        metrics = self._state.metrics
        if outcome.reloaded:
            self._state.use_tenants(self._served.directory)
            metrics.tenants_generation.set(outcome.generation)
            metrics.tenants_reloads.labels("reloaded").inc()
            counts = dataclasses.asdict(outcome.counts)  # numbers only: never a key or secret
            log.info("tenants_reloaded", generation=outcome.generation, pid=os.getpid(), **counts)
        else:
            metrics.tenants_reloads.labels("refused").inc()
            log.warning(
                "tenants_reload_refused",
                request=seq,
                generation=outcome.generation,
                reason=outcome.reason,
                pid=os.getpid(),
            )
        return outcome


def status(outcome: Outcome) -> pidfile.ReloadStatus:
    return pidfile.ReloadStatus(
        seq=outcome.seq,
        generation=outcome.generation,
        outcome="reloaded" if outcome.reloaded else "refused",
        reason=outcome.reason,
        **dataclasses.asdict(outcome.counts),
    )


class Record:
    """The receiver's record in the data directory, kept by the process that owns it."""

    def __init__(self, path: Path, record: pidfile.ReceiverRecord) -> None:
        self.path = path
        self._record = record

    def write(self) -> None:
        """A data directory that cannot take the record costs the reload command its verdict, not the
        receiver its service (SIGHUP still reloads)."""
        try:
            pidfile.write(self.path, self._record)
        except OSError as exc:
            log.warning("receiver_record_unwritable", path=str(self.path), error=str(exc))

    def settled(self, outcome: Outcome) -> None:
        self._record = msgspec.structs.replace(self._record, reload=status(outcome))
        self.write()

    def remove(self) -> None:
        pidfile.remove(self.path, self._record.pid)


class FileRequests:
    """A single receiver process: each SIGHUP is one request, for the tenants file as it is now."""

    def __init__(self, path: str, record: Record) -> None:
        self._path = path
        self._record = record

    def after(self, seq: int) -> Iterable[Request]:
        return [(seq + 1, read_file(self._path))]

    def settled(self, outcome: Outcome) -> None:
        self._record.settled(outcome)


class SnapshotRequests:
    """A worker of `--workers N`: the requests are the parent's copies of the file."""

    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots

    def after(self, seq: int) -> Iterable[Request]:
        return self._snapshots.after(seq)

    def settled(self, outcome: Outcome) -> None:
        pass  # the parent keeps the record


class Coordinator:
    """The parent of `--workers N`. Its SIGHUP handler only raises a flag; its supervision loop then
    reads the file once, keeps a copy for the workers, judges it as they will (the same bytes, the
    same code, so the same decision: it serves replacement workers and the record) and signals them."""

    def __init__(
        self, tenants_path: str, served: ServedTenants, snapshots: Snapshots, record: Record
    ) -> None:
        self._path = tenants_path
        self.served = served
        self._snapshots = snapshots
        self._record = record
        self.requested = False

    def request(self, _signum: int = signal.SIGHUP, _frame: object = None) -> None:
        self.requested = True

    def run_pending(self, workers: Sequence[int]) -> None:
        if not self.requested:
            return
        self.requested = False
        seq = self.served.seq + 1
        log.info("tenants_reload_requested", request=seq, workers=len(workers), pid=os.getpid())
        content = read_file(self._path)
        try:
            self._snapshots.write(seq, content)
        except OSError as exc:
            # The workers cannot be handed this request: judged here alone, as refused.
            content = ReloadRefused(f"cannot hand the tenants file to the workers: {exc}")
            log.error("tenants_reload_refused", request=seq, reason=str(content), pid=os.getpid())
            self._record.settled(self.served.judge(seq, content))
            return
        self._record.settled(self.served.judge(seq, content))
        for pid in workers:
            # One that exited meanwhile is replaced with what `served` holds now.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
