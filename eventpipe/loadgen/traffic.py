"""The traffic plan, pure and seeded: which vendor sends next, how many events, which of them are
duplicates, late, future or invalid, and the request that carries them. Each planned event knows the
identity the consumer will give it, so the outcome of a run can be predicted exactly."""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random

from eventpipe.loadgen.vendors import all_vendors
from eventpipe.loadgen.vendors.base import Draft, VendorTraffic, Visit, broken

SOURCES = ("topsort", "retailrocket", "dfinery", "impression")
# Recent valid events per source that duplicates are drawn from (retries resend recent events).
POOL_SIZE = 512
# Valid events are mostly seconds old; a share comes from apps that were offline for hours.
FRESH_SECONDS = 120.0
OFFLINE_SHARE = 0.05
OFFLINE_HOURS = 6.0
# How far beyond the window (late) or the future skew (future) an event is placed: far enough that a
# few minutes between this clock and the receiver's never change the verdict.
MARGIN_MIN = timedelta(hours=1)
MARGIN_MAX = timedelta(hours=24)
DEFAULT_WINDOW_HOURS = 48.0


class Kind(enum.StrEnum):
    VALID = "valid"
    DUPLICATE = "duplicate"
    LATE = "late"
    FUTURE = "future"
    INVALID = "invalid"


@dataclass(frozen=True)
class Shares:
    """Shares of all events sent. Invalid events are whole requests (one broken event refuses its
    request); the other kinds are drawn per event."""

    duplicates: float = 0.0
    late: float = 0.0
    future: float = 0.0
    invalid: float = 0.0

    def __post_init__(self) -> None:
        values = (self.duplicates, self.late, self.future, self.invalid)
        if any(not 0.0 <= v <= 1.0 for v in values) or sum(values) > 1.0 + 1e-9:
            raise ValueError("shares must each be within 0..1 and add up to at most 1")
        if self.invalid >= 1.0 and sum(values) > 1.0:
            raise ValueError("an invalid share of 1 leaves room for nothing else")


@dataclass(frozen=True)
class TrafficConfig:
    tenant: str
    seed: int
    sources: Sequence[str] = SOURCES
    shares: Shares = field(default_factory=Shares)
    batch: int = 1
    # The consumers' window per source (Settings.window_for); sources not named get the default.
    window_hours: Mapping[str, float] = field(default_factory=dict)
    future_skew_seconds: float = 600.0

    def window(self, source: str) -> timedelta:
        return timedelta(hours=self.window_hours.get(source, DEFAULT_WINDOW_HOURS))

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(SOURCES)
        if unknown or not self.sources:
            raise ValueError(f"sources are among {', '.join(SOURCES)}")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")


class Origin:
    """One event's identity, shared by every copy sent of it: the first accepted copy is stored, each
    later one is a duplicate."""

    __slots__ = ("accepted",)

    def __init__(self) -> None:
        self.accepted = False


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    kind: Kind
    event_type: str
    event_id: str  # "" for an invalid event
    origin: Origin | None  # None for an invalid event


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    source: str
    path: str
    route: str
    body: bytes
    events: tuple[PlannedEvent, ...]
    # False when the receiver must refuse it (400): invalid events, or Topsort's future events.
    expect_accepted: bool


class TrafficPlan:
    """Yields requests one by one, each built for the moment `now` it is sent."""

    def __init__(self, config: TrafficConfig, vendors: Mapping[str, VendorTraffic] | None = None) -> None:
        self.config = config
        # Traffic, not secrets: a seeded generator makes the run repeatable.
        self._rng = Random(config.seed)  # noqa: S311
        vendors = vendors or all_vendors(config.tenant)
        self._vendors = [vendors[s] for s in config.sources]
        self._pools: dict[str, deque[tuple[Draft, Origin]]] = {
            s: deque(maxlen=POOL_SIZE) for s in config.sources
        }
        self._pending: deque[PlannedRequest] = deque()
        shares = config.shares
        rest = 1.0 - shares.invalid
        # Per-event odds inside requests that are not invalid, so that the shares hold over all events.
        scale = 1.0 / rest if rest > 0 else 0.0
        self._cumulative = (
            shares.duplicates * scale,
            (shares.duplicates + shares.late) * scale,
            (shares.duplicates + shares.late + shares.future) * scale,
        )
        self._skew = timedelta(seconds=config.future_skew_seconds)

    def next(self, now: datetime) -> PlannedRequest:
        if not self._pending:
            self._pending.extend(self._plan(now))
        return self._pending.popleft()

    def _plan(self, now: datetime) -> list[PlannedRequest]:
        rng = self._rng
        vendor = rng.choice(self._vendors)
        size = min(self.config.batch, vendor.max_batch)
        batched = self.config.batch > 1
        visit = Visit.draw(rng)
        if rng.random() < self.config.shares.invalid:
            return [self._invalid(vendor, visit, size, batched, now)]
        drafts: list[tuple[Draft, PlannedEvent]] = []
        fresh: list[tuple[Draft, Origin]] = []
        for index in range(size):
            kind = self._kind(vendor.source)
            if kind is Kind.DUPLICATE:
                draft, origin = rng.choice(self._pools[vendor.source])
            else:
                when = self._when(vendor.source, kind, now, index)
                draft = vendor.draft(rng, visit, when, index, may_omit_time=kind is Kind.VALID)
                origin = Origin()
                if kind is Kind.VALID:
                    fresh.append((draft, origin))
            drafts.append((draft, PlannedEvent(kind, draft.event_type, draft.event_id, origin)))
        self._pools[vendor.source].extend(fresh)
        if vendor.receiver_refuses_future:
            refused = [d for d in drafts if d[1].kind is Kind.FUTURE]
            kept = [d for d in drafts if d[1].kind is not Kind.FUTURE]
            groups = [(kept, True), (refused, False)]
        else:
            groups = [(drafts, True)]
        return [self._request(vendor, group, batched, accepted) for group, accepted in groups if group]

    def _kind(self, source: str) -> Kind:
        u = self._rng.random()
        dup, late, future = self._cumulative
        if u < dup:
            # Nothing sent yet to repeat: the event is a new one.
            return Kind.DUPLICATE if self._pools[source] else Kind.VALID
        if u < late:
            return Kind.LATE
        if u < future:
            return Kind.FUTURE
        return Kind.VALID

    def _when(self, source: str, kind: Kind, now: datetime, index: int) -> datetime:
        rng = self._rng
        window = self.config.window(source)
        margin = timedelta(seconds=rng.uniform(MARGIN_MIN.total_seconds(), MARGIN_MAX.total_seconds()))
        if kind is Kind.LATE:
            moment = now - window - margin
        elif kind is Kind.FUTURE:
            moment = now + self._skew + margin
        elif rng.random() < OFFLINE_SHARE:
            offline = min(OFFLINE_HOURS * 3600, window.total_seconds() / 2)
            moment = now - timedelta(seconds=rng.uniform(0, offline))
        else:
            moment = now - timedelta(seconds=rng.uniform(0, FRESH_SECONDS))
        # The events of one request get distinct milliseconds, so no two of them are the same bytes.
        return moment.replace(microsecond=0) + timedelta(milliseconds=index)

    def _invalid(
        self, vendor: VendorTraffic, visit: Visit, size: int, batched: bool, now: datetime
    ) -> PlannedRequest:
        rng = self._rng
        drafts = [
            vendor.draft(rng, visit, self._when(vendor.source, Kind.VALID, now, i), i, may_omit_time=False)
            for i in range(size)
        ]
        broken_at = rng.randrange(size)
        drafts[broken_at] = broken(vendor, rng, drafts[broken_at])
        body = vendor.request(drafts, batched)
        if rng.random() < 0.2:
            # Some clients send what is not JSON at all: a body cut short.
            body = dataclasses.replace(body, body=body.body[: len(body.body) // 2])
        events = tuple(PlannedEvent(Kind.INVALID, d.event_type, "", None) for d in drafts)
        return PlannedRequest(vendor.source, body.path, body.route, body.body, events, expect_accepted=False)

    def _request(
        self, vendor: VendorTraffic, drafts: list[tuple[Draft, PlannedEvent]], batched: bool, accepted: bool
    ) -> PlannedRequest:
        body = vendor.request([d for d, _ in drafts], batched)
        events = tuple(e for _, e in drafts)
        return PlannedRequest(
            vendor.source, body.path, body.route, body.body, events, expect_accepted=accepted
        )
