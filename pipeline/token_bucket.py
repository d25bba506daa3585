"""The token bucket behind the receiver's rate limits, as pure functions over a two-number state: the
caller passes the time in, so the arithmetic is tested without time passing, and the same state can
live in a process's memory or in a table shared by several processes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

# Float sums of many small refills land a hair below a whole token; without this slack a client that
# waited exactly its Retry-After could be refused once more.
TOKEN_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Limit:
    """`rate` tokens per second flow into a bucket that holds at most `burst`; a request takes one."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a finite number > 0, not {self.rate!r}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, not {self.burst!r}")


class Bucket(NamedTuple):
    tokens: float
    stamp: float  # the monotonic time `tokens` was worked out at


class Decision(NamedTuple):
    allowed: bool
    retry_after: int  # whole seconds until the next token; 0 when allowed


ADMITTED = Decision(True, 0)


def full(limit: Limit, now: float) -> Bucket:
    return Bucket(limit.burst, now)


def take(bucket: Bucket, limit: Limit, now: float) -> tuple[Bucket, Decision]:
    """Refill for the time since the last call, then take a token if there is one. A `now` earlier
    than the bucket's stamp (another process read its clock first, then lost the race for the lock)
    counts as no time passing."""
    elapsed = now - bucket.stamp
    if elapsed > 0:
        bucket = Bucket(min(limit.burst, bucket.tokens + elapsed * limit.rate), now)
    if bucket.tokens >= 1.0 - TOKEN_EPSILON:
        return Bucket(max(0.0, bucket.tokens - 1.0), bucket.stamp), ADMITTED
    return bucket, Decision(False, retry_after(bucket.tokens, limit.rate))


def retry_after(tokens: float, rate: float) -> int:
    """Seconds until the next whole token, rounded up (HTTP's Retry-After is whole seconds), at least 1."""
    return max(1, math.ceil((1.0 - TOKEN_EPSILON - tokens) / rate))
