"""The one retry backoff: capped exponential, for every loop that waits before trying again (the
sink at start-up and while writing, an abandoned batch fetched again, the receiver's reconnect to
Kafka). A frozen policy, and the state of one run of failures; sleep and randomness are injected, so
tests drive it without a clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 0.2  # seconds before the first retry
    cap: float = 30.0  # no wait is longer
    factor: float = 2.0  # each wait over the one before
    # The share of each wait drawn at random (0.25: between 75 and 100 % of it), so that processes
    # failing together do not retry together. 0 keeps the waits exact.
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"backoff needs 0 < initial <= cap, factor >= 1, 0 <= jitter <= 1: {self}")


class Backoff:
    """Waits growing from `initial` by `factor` up to `cap`, until `reset()` (after a success)."""

    def __init__(
        self, policy: BackoffPolicy, *, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        # Its own generator, not the random module's shared one (seeded by a test that needs it), and
        # only for a policy with jitter: seeding one costs ~30 µs, and the consumer makes a Backoff per batch.
        self._rng = rng or (random.Random() if policy.jitter else None)  # noqa: S311 - retries, not secrets
        self._base = policy.initial
        self._next = self._draw()

    @property
    def next_delay(self) -> float:
        """Seconds the next wait() sleeps (for the log line that announces the retry)."""
        return self._next

    def step(self) -> float:
        """The delay to wait now, making the one after it longer (up to the cap): for a caller that
        waits in its own way (the consumer keeps polling Kafka while it waits)."""
        delay = self._next
        self._base = min(self._base * self._policy.factor, self._policy.cap)
        self._next = self._draw()
        return delay

    async def wait(self) -> None:
        """Sleep the next delay (step() with the injected sleep)."""
        await self._sleep(self.step())

    def reset(self) -> None:
        self._base = self._policy.initial
        self._next = self._draw()

    def _draw(self) -> float:
        if self._rng is None or not self._policy.jitter:
            return self._base
        return self._base * (1 - self._policy.jitter * self._rng.random())
