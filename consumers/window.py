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
    return _verdict(
        event.received_at - event.occurred_at,
        policy.max_age(event.source),
        timedelta(seconds=policy.future_skew_seconds),
    )


def _verdict(age: timedelta, max_age: timedelta, future_skew: timedelta) -> str | None:
    if age > max_age:
        return "late"
    if -age > future_skew:
        return "future"
    return None


def split(
    events: Iterable[CanonicalEvent], policy: WindowPolicy
) -> tuple[list[CanonicalEvent], list[tuple[CanonicalEvent, str]]]:
    """(events inside the window, [(event, "late" | "future"), ...])."""
    inside: list[CanonicalEvent] = []
    outside: list[tuple[CanonicalEvent, str]] = []
    # The bounds per source, built once per batch rather than once per event.
    max_ages: dict[str, timedelta] = {}
    future_skew = timedelta(seconds=policy.future_skew_seconds)
    for event in events:
        max_age = max_ages.get(event.source)
        if max_age is None:
            max_age = max_ages[event.source] = policy.max_age(event.source)
        reason = _verdict(event.received_at - event.occurred_at, max_age, future_skew)
        if reason is None:
            inside.append(event)
        else:
            outside.append((event, reason))
    return inside, outside
