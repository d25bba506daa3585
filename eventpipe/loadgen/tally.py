"""Counting a run as it happens, in bounded memory: what was sent, what the receiver answered, and
from the accepted requests what the consumers must count (pure; the runner feeds it replies)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from eventpipe.loadgen.traffic import Kind, PlannedRequest

# The consumers' outcomes (eventpipe_consumer_events_total{outcome}) an accepted event leads to.
OUTCOMES = ("stored", "duplicate", "late", "future", "invalid")
SAMPLES_KEPT = 5


class Histogram:
    """Durations in log-spaced buckets 2 % wide: percentiles to within 2 %, in constant memory."""

    _BASE = 1e-6
    _LOG_FACTOR = math.log(1.02)

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        bucket = int(math.log(max(seconds, self._BASE) / self._BASE) / self._LOG_FACTOR)
        self._buckets[bucket] += 1
        self.count += 1
        self.max = max(self.max, seconds)

    def quantile(self, q: float) -> float:
        """The q-quantile in seconds (0 when empty)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                # the bucket's middle, never above the largest value seen
                return min(self.max, self._BASE * math.exp((bucket + 0.5) * self._LOG_FACTOR))
        return self.max


@dataclass(frozen=True)
class Sample:
    """An answer that was not the one planned, kept for the summary."""

    source: str
    path: str
    status: str
    body: str


def status_label(status: int | None, error: str | None) -> str:
    return str(status) if status is not None else f"no reply ({error or 'error'})"


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)  # by source
    events: Counter[str] = field(default_factory=Counter)  # by source
    kinds: Counter[str] = field(default_factory=Counter)  # by Kind value
    statuses: Counter[str] = field(default_factory=Counter)
    statuses_by_source: dict[str, Counter[str]] = field(default_factory=dict)
    accepted_events: Counter[str] = field(default_factory=Counter)  # by source
    expected: dict[str, Counter[str]] = field(default_factory=dict)  # source -> outcome -> events
    as_planned: int = 0
    not_as_planned: int = 0
    rate_limited: int = 0  # 429: the tenant's limit (EVENTPIPE_RATE_LIMITS), not a wrong answer
    no_reply: int = 0
    uncertain_events: int = 0  # sent without a reply: they may or may not be in Kafka
    skipped: int = 0  # ticks not sent because every connection and the backlog were busy
    latency: Histogram = field(default_factory=Histogram)
    delay: Histogram = field(default_factory=Histogram)
    samples: list[Sample] = field(default_factory=list)

    def record(
        self,
        request: PlannedRequest,
        status: int | None,
        *,
        latency: float = 0.0,
        delay: float = 0.0,
        error: str | None = None,
        body: bytes = b"",
    ) -> bool:
        """Count one request's fate; True when the receiver accepted it (2xx)."""
        source = request.source
        label = status_label(status, error)
        self.requests[source] += 1
        self.events[source] += len(request.events)
        for event in request.events:
            self.kinds[event.kind.value] += 1
        self.statuses[label] += 1
        self.statuses_by_source.setdefault(source, Counter())[label] += 1
        if status is not None:
            self.latency.add(latency)
        self.delay.add(delay)
        accepted = status is not None and 200 <= status < 300
        planned = accepted if request.expect_accepted else status == 400
        if status == 429:
            self.rate_limited += 1
        elif planned:
            self.as_planned += 1
        else:
            self.not_as_planned += 1
            if len(self.samples) < SAMPLES_KEPT:
                excerpt = body[:300].decode("utf-8", errors="replace")
                self.samples.append(Sample(source, request.path, label, excerpt))
        if status is None:
            self.no_reply += 1
            self.uncertain_events += len(request.events)
        elif accepted:
            self._expect(request)
        return accepted

    def _expect(self, request: PlannedRequest) -> None:
        self.accepted_events[request.source] += len(request.events)
        outcomes = self.expected.setdefault(request.source, Counter())
        for event in request.events:
            if event.kind is Kind.LATE:
                outcomes["late"] += 1
            elif event.kind is Kind.FUTURE:
                outcomes["future"] += 1
            elif event.origin is None:
                # An invalid body the receiver took anyway: a receiver bug the consumers will judge.
                self.uncertain_events += 1
            elif event.origin.accepted:
                outcomes["duplicate"] += 1
            else:
                event.origin.accepted = True
                outcomes["stored"] += 1

    def expected_total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.expected.values())
