"""Time as an injected object (the worker takes a Clock), so that what depends on "now" can be
driven by a test. Timezone-aware UTC only."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def to_epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
