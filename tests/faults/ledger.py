"""The ledger of a fault run. A sender posts a steady stream of one-event requests with known event ids
(Topsort clicks, and every fourth a DFINERY purchase) and records each one's outcome; after the fault
and the recovery the ledger is compared with the rows in the sink: lost (acknowledged, not stored),
duplicated (stored more than once), phantom (stored, never acknowledged)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp

from tests.corpus import Case, load_cases

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)


class Outcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"  # a 2xx: the pipeline promised to store it
    REFUSED = "refused"  # another status: the pipeline promised nothing
    UNSENT = "unsent"  # no connection: the request never reached a receiver
    AMBIGUOUS = "ambiguous"  # sent, then the connection broke or the client timed out: may be stored


@dataclass(eq=False)
class Window:
    """The time a fault is in effect. Opened just before the fault is injected: the requests in flight
    then, or sent before the fault is known to be in effect, are `caught` by it; the replies to
    requests sent once it is in effect are `replies` (e.g. no 2xx while Kafka is down)."""

    caught: set[str]
    in_effect: bool = False
    replies: Counter[str] = field(default_factory=Counter)
    caught_replies: Counter[str] = field(default_factory=Counter)

    def fault_in_effect(self) -> None:
        self.in_effect = True


@dataclass
class Ledger:
    fault: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    in_flight: set[str] = field(default_factory=set)
    window: Window | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # each request's time to its reply

    def open_window(self) -> Window:
        self.window = Window(caught=set(self.in_flight))
        return self.window

    def close_window(self) -> None:
        self.window = None

    def sending(self, event_id: str) -> tuple[Window | None, bool]:
        """Note a request going out; returns the window it was sent in and whether the fault was in
        effect then, to hand back to `record`."""
        self.in_flight.add(event_id)
        window = self.window
        if window is not None and not window.in_effect:
            window.caught.add(event_id)
        return window, window is not None and window.in_effect

    def record(
        self,
        event_id: str,
        outcome: Outcome,
        status: str,
        sent: tuple[Window | None, bool],
        seconds: float = 0.0,
    ) -> None:
        self.in_flight.discard(event_id)
        self.seconds[event_id] = seconds
        self.outcomes[event_id] = outcome
        self.statuses[status] += 1
        window = self.window
        if window is None:
            return
        if sent[0] is window and sent[1]:
            window.replies[status] += 1
        elif event_id in window.caught:
            window.caught_replies[status] += 1

    def ids(self, outcome: Outcome) -> set[str]:
        return {event_id for event_id, o in self.outcomes.items() if o is outcome}

    def refused_after(self, seconds: float) -> set[str]:
        """Refused requests answered no sooner than `seconds`: a 503 after the receiver's produce
        timeout is the documented ambiguity (the broker may still commit the record), unlike a 503
        given at once (refused before any write)."""
        return {
            event_id
            for event_id, o in self.outcomes.items()
            if o is Outcome.REFUSED and self.seconds.get(event_id, 0.0) >= seconds
        }

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


@dataclass(frozen=True)
class Figures:
    """The ledger against the sink, for one fault."""

    fault: str
    sent: int
    acknowledged: int
    refused: int
    unsent: int
    ambiguous: int
    stored: int  # rows
    lost: list[str]  # acknowledged, not stored
    duplicated: dict[str, int]  # event id -> rows, where more than one
    phantom: list[str]  # stored, not acknowledged
    unexplained_phantom: list[str]  # phantom whose request was neither ambiguous nor excused
    outage: Mapping[str, int] | None  # replies to requests sent while the fault was in effect
    # Measured by the cluster faults (tests/faults/test_cluster.py), absent elsewhere:
    answered_2xx: float | None = None  # share of the outage's replies that were 2xx
    recovery_seconds: float | None = None  # from the repair (restart, SIGCONT) to full replication
    storing_gap_seconds: float | None = None  # longest time without a new row while the fault lasted
    longest_wait_seconds: float | None = None  # the longest any stored event waited for its row

    def line(self) -> str:
        outage = "" if self.outage is None else f" outage_replies={dict(sorted(self.outage.items()))}"
        if self.answered_2xx is not None:
            outage += f" outage_2xx={self.answered_2xx:.1%}"
        if self.recovery_seconds is not None:
            outage += f" recovery={self.recovery_seconds:.1f}s"
        if self.storing_gap_seconds is not None:
            outage += f" longest_storing_gap={self.storing_gap_seconds:.1f}s"
        if self.longest_wait_seconds is not None:
            outage += f" longest_request_to_row={self.longest_wait_seconds:.1f}s"
        return (
            f"ledger[{self.fault}]: sent={self.sent} acknowledged={self.acknowledged} "
            f"refused={self.refused} unsent={self.unsent} ambiguous={self.ambiguous} stored={self.stored} "
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} phantom={len(self.phantom)} "
            f"(unexplained {len(self.unexplained_phantom)}){outage}"
        )


def compare(
    ledger: Ledger,
    rows_by_id: Mapping[str, int],
    window: Window | None = None,
    excused: Set[str] = frozenset(),
) -> Figures:
    """Pure: the ledger's outcomes against the sink's rows per event id. A phantom is explained when
    its request was ambiguous (the client saw no reply) or is among the `excused` ids."""
    acknowledged = ledger.ids(Outcome.ACKNOWLEDGED)
    ambiguous = ledger.ids(Outcome.AMBIGUOUS)
    stored = set(rows_by_id)
    phantom = sorted(stored - acknowledged)
    return Figures(
        fault=ledger.fault,
        sent=len(ledger.outcomes),
        acknowledged=len(acknowledged),
        refused=ledger.count(Outcome.REFUSED),
        unsent=ledger.count(Outcome.UNSENT),
        ambiguous=len(ambiguous),
        stored=sum(rows_by_id.values()),
        lost=sorted(acknowledged - stored),
        duplicated={event_id: n for event_id, n in rows_by_id.items() if n > 1},
        phantom=phantom,
        unexplained_phantom=[e for e in phantom if e not in ambiguous and e not in excused],
        outage=None if window is None else dict(window.replies),
    )


def event_id_of(body: bytes) -> str:
    """The event id inside a request body the sender made (the inverse of `Sender.event`)."""
    decoded = json.loads(body)
    if "clicks" in decoded:
        return str(decoded["clicks"][0]["id"])
    return str(decoded["event_attributes"]["event_id"])


def _case(case_id: str) -> Case:
    return next(c for c in load_cases() if c.id == case_id)


class Sender:
    """Lanes of sequential requests, each lane pausing between requests: a steady stream at a moderate
    pace, with up to `lanes` requests in flight. Use as an async context manager."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        ledger: Ledger,
        lanes: int = 3,
        pace_seconds: float = 0.03,
    ) -> None:
        self._http = http
        self._url = url
        self._ledger = ledger
        self._lanes = lanes
        self._pace = pace_seconds
        self._numbers = itertools.count()
        self._run = uuid.uuid4().hex[:8]
        self._click = _case("topsort-spec-click")
        self._purchase = _case("dfinery-seed-purchase")
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Sender:
        self._tasks = [asyncio.create_task(self._lane(), name=f"sender-{i}") for i in range(self._lanes)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop sending and wait for the requests in flight to be answered (or to time out)."""
        self._stopping.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks = []

    def event(self, n: int) -> tuple[str, Case, bytes]:
        """The n-th request: its event id, its case (path, headers) and its body."""
        now = datetime.now(UTC)
        if n % 4 == 3:
            case = self._purchase
            body: Any = copy.deepcopy(case.body_json)
            event_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self._run}-{n}"))
            body["event_attributes"]["event_id"] = event_id
            body["event_attributes"]["event_datetime"] = int(now.timestamp() * 1000)
        else:
            case = self._click
            body = copy.deepcopy(case.body_json)
            event_id = f"fault-{self._run}-{n}"
            click = body["clicks"][0]
            click["id"] = event_id
            click["occurredAt"] = now.isoformat(timespec="milliseconds")
        return event_id, case, json.dumps(body).encode()

    async def _lane(self) -> None:
        while not self._stopping.is_set():
            await self._one(next(self._numbers))
            # The pacing: a steady stream rather than a flood; stop() ends the wait at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._pace)

    async def _one(self, n: int) -> None:
        event_id, case, body = self.event(n)
        ledger = self._ledger
        sent = ledger.sending(event_id)
        began = time.monotonic()
        try:
            async with self._http.post(
                self._url + case.path,
                params=case.query,
                headers=case.headers,
                data=body,
                timeout=REQUEST_TIMEOUT,
            ) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError:
            ledger.record(event_id, Outcome.UNSENT, "no-connection", sent)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            ledger.record(event_id, Outcome.AMBIGUOUS, type(exc).__name__, sent)
            return
        outcome = Outcome.ACKNOWLEDGED if 200 <= status < 300 else Outcome.REFUSED
        ledger.record(event_id, outcome, str(status), sent, time.monotonic() - began)
