"""One fault run's pipeline: a receiver and consumer workers as real processes on a topic, group and
sink of their own; the ledger and its sender; and the settling that waits for the consumers to catch
up and compares the ledger with the sink."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from pipeline.settings import Settings
from tests.faults.ledger import Figures, Ledger, Outcome, Sender, Window, compare, event_id_of
from tests.faults.processes import Consumer, Process, Receiver
from tests.integration.conftest import query
from tests.kafka_util import group_offsets, read_below
from tests.ports import free_port
from tests.waiting import wait_for

SETTLE_SECONDS = 240.0
START_SECONDS = 90.0


@dataclass
class Rig:
    settings: Settings
    log_dir: Path
    http: aiohttp.ClientSession
    ledger: Ledger
    report: Callable[[Figures], None]
    consumers: list[Consumer] = field(default_factory=list)  # the running ones
    started: list[Process] = field(default_factory=list)  # every process ever started, for teardown
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def sender(self, lanes: int = 3, pace_seconds: float = 0.03) -> Sender:
        return Sender(self.http, self.url, self.ledger, lanes, pace_seconds)

    async def start_receiver(self, wait_ready: bool = True) -> Receiver:
        """A receiver on the rig's port (a restarted one takes the same port, so the sender goes on)."""
        receiver = Receiver(f"receiver-{next(self._serial)}", self.settings, self.log_dir)
        receiver.start()
        self.started.append(receiver)
        if wait_ready:
            await self.wait_ready(receiver)
        return receiver

    async def start_consumer(self, wait_ready: bool = True) -> Consumer:
        """A consumer worker; without `wait_ready`, waits only until it is alive (its signal handlers
        are in place), not until it has joined the group."""
        settings = self.settings.replace(metrics_port=free_port())
        consumer = Consumer(f"consumer-{next(self._serial)}", settings, self.log_dir)
        consumer.start()
        self.started.append(consumer)
        self.consumers.append(consumer)
        if wait_ready:
            await self.wait_ready(consumer)
        else:
            await self._wait(consumer, consumer.alive, "alive")
        return consumer

    async def wait_ready(self, process: Receiver | Consumer, seconds: float = START_SECONDS) -> None:
        await self._wait(process, process.ready, "ready", seconds)

    async def _wait(
        self,
        process: Process,
        probe: Callable[[aiohttp.ClientSession], Awaitable[bool]],
        what: str,
        seconds: float = START_SECONDS,
    ) -> None:
        async def holds() -> bool:
            assert process.running, f"{process.name} exited with {process.returncode}\n{process.tail()}"
            return await probe(self.http)

        await wait_for(holds, seconds, lambda: f"{process.name} to be {what}\n{process.tail()}")

    async def stop_consumer(self, consumer: Consumer) -> None:
        """SIGTERM: it finishes the batch in hand, commits and leaves the group."""
        self.consumers.remove(consumer)
        code = await consumer.stop()
        assert code == 0, f"{consumer.name} exited with {code}\n{consumer.tail()}"

    async def kill_consumer(self, consumer: Consumer) -> None:
        self.consumers.remove(consumer)
        await consumer.kill()

    async def acknowledged(
        self, more: int, seconds: float = 120.0, meanwhile: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Wait until `more` requests beyond those acknowledged so far have been acknowledged, calling
        `meanwhile` at every poll."""
        target = self.ledger.count(Outcome.ACKNOWLEDGED) + more

        async def reached() -> bool:
            if meanwhile is not None:
                await meanwhile()
            return self.ledger.count(Outcome.ACKNOWLEDGED) >= target

        await wait_for(
            reached,
            seconds,
            lambda: f"{target} acknowledged requests; replies so far {dict(self.ledger.statuses)}",
        )

    async def all_not_ready(self) -> bool:
        return all([await c.readyz(self.http) == 503 for c in self.consumers])

    async def not_ready_throughout(self, more: int) -> list[str]:
        """Wait for `more` acknowledgements while polling every consumer's /readyz; returns the answers
        that were not 503: a consumer claiming to be ready while it cannot store."""
        claims: list[str] = []

        async def poll() -> None:
            for consumer in self.consumers:
                status = await consumer.readyz(self.http)
                if status != 503:
                    claims.append(f"{consumer.name}: {status}")

        await self.acknowledged(more, meanwhile=poll)
        return claims

    async def settle(
        self,
        window: Window | None = None,
        excused: Set[str] = frozenset(),
        *,
        answered_2xx: float | None = None,
        recovery_seconds: float | None = None,
        storing_gap_seconds: float | None = None,
        longest_wait: bool = False,
    ) -> Figures:
        """Once the sender has stopped: wait until the group has committed every record of the topic
        (commits follow the writes, so all is stored) and every consumer is ready, then compare.
        The keywords are figures a fault measured itself (tests/faults/test_cluster.py)."""
        lag: list[int] = []
        acknowledged = self.ledger.count(Outcome.ACKNOWLEDGED)

        async def caught_up() -> bool:
            committed, ends = await group_offsets(self.settings)
            lag.append(sum(ends[p] - committed[p] for p in ends))
            # Every 2xx is a record, so fewer records than 2xx is a stale answer: a broker resumed
            # from a pause tells the end offsets it knew before, for a moment.
            return lag[-1] == 0 and sum(ends.values()) >= acknowledged

        await wait_for(
            caught_up,
            SETTLE_SECONDS,
            lambda: f"the consumers to catch up (lag {lag[-1:]})\n{self.tails()}",
        )
        for consumer in self.consumers:
            await self.wait_ready(consumer)
        figures = dataclasses.replace(
            compare(self.ledger, await self.stored_ids(), window, excused),
            answered_2xx=answered_2xx,
            recovery_seconds=recovery_seconds,
            storing_gap_seconds=storing_gap_seconds,
            longest_wait_seconds=await self.longest_wait() if longest_wait else None,
        )
        print("\n" + figures.line())
        self.report(figures)
        return figures

    async def longest_wait(self) -> float:
        """The longest any stored event waited from its request to its row (stored_at - received_at):
        a partition whose consumer stalls shows here even while the others keep storing."""
        rows = await query(self.settings.sink, "SELECT received_at, stored_at FROM events")
        return max((_instant(stored) - _instant(received) for received, stored in rows), default=0.0)

    async def longest_storing_gap(self, since: float, until: float) -> float:
        """The longest stretch within [since, until] (time.monotonic() values) in which no row was
        stored, from the rows' stored_at: a partition whose consumer stalls does not show while the
        others keep storing (longest_wait shows it)."""
        to_wall = time.time() - time.monotonic()
        rows = await query(self.settings.sink, "SELECT stored_at FROM events")
        return longest_gap([_instant(r[0]) for r in rows], since + to_wall, until + to_wall)

    async def stored_ids(self) -> dict[str, int]:
        """Rows per event id in the sink, read independently of the consumers."""
        sql = "SELECT event_id, count(*) FROM events GROUP BY event_id"
        try:
            rows = await query(self.settings.sink, sql)
        except sqlite3.OperationalError:
            # A full disk refuses a reader too: SQLite cannot grow the WAL index (SQLITE_IOERR_SHMSIZE).
            # No write succeeds meanwhile, so a copy of the files, read elsewhere, is the sink's state.
            rows = await query(self._sqlite_copy(), sql)
        return {str(r[0]): int(r[1]) for r in rows}

    def _sqlite_copy(self) -> str:
        source = Path(self.settings.sink.removeprefix("sqlite:///"))
        copy_dir = self.log_dir / f"sink-copy-{next(self._serial)}"
        copy_dir.mkdir()
        for suffix in ("", "-wal"):
            original = source.with_name(source.name + suffix)
            if original.exists():
                shutil.copyfile(original, copy_dir / original.name)
        return f"sqlite:///{copy_dir / source.name}"

    async def committed_but_not_stored(self) -> list[str]:
        """Event ids of records below the group's committed offsets that the sink does not hold: must
        be none, whatever is failing (commits follow writes)."""
        committed, _ends = await group_offsets(self.settings)
        records = await read_below(self.settings.kafka_bootstrap, self.settings.raw_topic, committed)
        stored = await self.stored_ids()
        assert len(records) == sum(committed.values())
        return [
            event_id for event_id in map(event_id_of, (r.value for r in records)) if event_id not in stored
        ]

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.started)

    async def close(self) -> None:
        for process in self.started:
            if process.running:
                await process.kill()


def longest_gap(stamps: list[float], start: float, end: float) -> float:
    """Pure: the longest interval within [start, end] that holds none of the stamps."""
    edges = [start, *sorted(t for t in stamps if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(edges))


def _instant(value: str | datetime) -> float:
    """A row's time as the sinks give it back: PostgreSQL a datetime, SQLite ISO 8601 text."""
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value)).timestamp()


def assert_no_loss(figures: Figures) -> None:
    """The promise: nothing acknowledged is lost, nothing stored twice, nothing stored that was refused."""
    assert figures.acknowledged > 0, figures.line()
    assert figures.lost == [], f"{figures.line()}\nlost: {figures.lost[:20]}"
    assert figures.duplicated == {}, (
        f"{figures.line()}\nduplicated: {dict(list(figures.duplicated.items())[:20])}"
    )
    assert figures.unexplained_phantom == [], (
        f"{figures.line()}\nstored but refused: {figures.unexplained_phantom[:20]}"
    )
