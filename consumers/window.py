"""Step 2: the event-time window. Measured against the record's received_at, never the consumer's
clock, so that a consumer that was down for hours still stores every event that was fresh when it
was received."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from pipeline.canonical import CanonicalEvent


@dataclass(frozen=True)
class WindowPolicy:
    hours: float = 48.0
    future_skew_seconds: float = 600.0
    hours_by_source: Mapping[str, float] = field(default_factory=dict)

    def max_age(self, source: str) -> timedelta:
        return timedelta(hours=self.hours_by_source.get(source, self.hours))


def verdict(event: CanonicalEvent, policy: WindowPolicy) -> str | None:
    """None when the event is inside the window, else "late" or "future"."""
    age = event.received_at - event.occurred_at
    if age > policy.max_age(event.source):
        return "late"
    if -age > timedelta(seconds=policy.future_skew_seconds):
        return "future"
    return None


def split(
    events: Iterable[CanonicalEvent], policy: WindowPolicy
) -> tuple[list[CanonicalEvent], list[tuple[CanonicalEvent, str]]]:
    """(events inside the window, [(event, "late" | "future"), ...])."""
    inside: list[CanonicalEvent] = []
    outside: list[tuple[CanonicalEvent, str]] = []
    for event in events:
        reason = verdict(event, policy)
        if reason is None:
            inside.append(event)
        else:
            outside.append((event, reason))
    return inside, outside
