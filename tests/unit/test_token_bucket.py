"""The token bucket's arithmetic, driven by explicit times: what it admits over any stretch of time,
how it refills, and the Retry-After it gives."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.token_bucket import TOKEN_EPSILON, Bucket, Limit, full, take

rates = st.floats(min_value=0.001, max_value=1000, allow_nan=False)
bursts = st.floats(min_value=1, max_value=500, allow_nan=False)
starts = st.floats(min_value=0, max_value=100_000, allow_nan=False)
gaps = st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60)


def _run(limit: Limit, start: float, gaps: list[float]) -> list[tuple[float, bool, int]]:
    """Requests at start + the running sum of gaps, from a full bucket: (time, admitted, retry_after)."""
    bucket = full(limit, start)
    now = start
    seen = []
    for gap in gaps:
        now += gap
        bucket, decision = take(bucket, limit, now)
        seen.append((now, decision.allowed, decision.retry_after))
    return seen


@given(rate=rates, burst=bursts, start=starts, gaps=gaps)
def test_never_admits_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, start: float, gaps: list[float]
) -> None:
    limit = Limit(rate, burst)
    seen = _run(limit, start, gaps)
    # Over every stretch between two requests, not only from the start.
    for first in range(len(seen)):
        admitted = 0
        for last in range(first, len(seen)):
            admitted += seen[last][1]
            elapsed = seen[last][0] - seen[first][0]
            assert admitted <= burst + rate * elapsed + 1e-6, (first, last, admitted)


@given(rate=rates, burst=bursts, start=starts, gaps=gaps)
def test_a_refusal_says_when_the_next_request_is_admitted(
    rate: float, burst: float, start: float, gaps: list[float]
) -> None:
    limit = Limit(rate, burst)
    bucket = full(limit, start)
    now = start
    for gap in gaps:
        now += gap
        bucket, decision = take(bucket, limit, now)
        if decision.allowed:
            assert decision.retry_after == 0
            continue
        wait = decision.retry_after
        assert isinstance(wait, int) and wait >= 1
        # Retry-After is enough: the next token is there after it ...
        assert take(bucket, limit, now + wait)[1].allowed
        # ... and not longer than needed: a whole second earlier it would not be.
        if wait > 1:
            assert not take(bucket, limit, now + wait - 1)[1].allowed


@given(rate=rates, burst=bursts, start=starts)
def test_a_full_bucket_admits_its_burst_at_once_then_refills_at_the_rate(
    rate: float, burst: float, start: float
) -> None:
    limit = Limit(rate, burst)
    whole = math.floor(burst + TOKEN_EPSILON)
    seen = _run(limit, start, [0.0] * (whole + 1))
    assert [allowed for _, allowed, _ in seen] == [True] * whole + [False]
    left = max(0.0, burst - whole)
    assert seen[-1][2] == max(1, math.ceil((1 - TOKEN_EPSILON - left) / rate))


def test_tokens_come_back_at_the_rate_and_stop_at_the_burst() -> None:
    limit = Limit(rate=2.0, burst=4)
    bucket = Bucket(0.0, 100.0)
    bucket, decision = take(bucket, limit, 100.0)
    assert decision == (False, 1)
    bucket, decision = take(bucket, limit, 100.5)  # one token back, taken
    assert decision.allowed and bucket.tokens == pytest.approx(0.0)
    bucket, _ = take(bucket, limit, 1000.0)  # a long quiet spell refills to the burst, not beyond
    assert bucket.tokens == pytest.approx(3.0)


def test_a_clock_reading_older_than_the_bucket_adds_nothing() -> None:
    limit = Limit(rate=1.0, burst=1)
    bucket, decision = take(Bucket(0.0, 50.0), limit, 10.0)
    assert bucket == Bucket(0.0, 50.0)
    assert decision == (False, 1)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    # 0.01 tokens/s from empty: 100 s to the next token; with 0.25 tokens in hand, 75 s.
    assert take(Bucket(0.0, 0.0), Limit(0.01, 20), 0.0)[1] == (False, 100)
    assert take(Bucket(0.25, 0.0), Limit(0.01, 20), 0.0)[1] == (False, 75)
    assert take(Bucket(0.25, 0.0), Limit(0.3, 20), 0.0)[1] == (False, 3)  # 2.5 s -> 3


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        pytest.param(0, 1, id="zero-rate"),
        pytest.param(-1, 1, id="negative-rate"),
        pytest.param(math.inf, 1, id="infinite-rate"),
        pytest.param(1, 0.5, id="burst-below-one"),
        pytest.param(1, math.nan, id="nan-burst"),
    ],
)
def test_impossible_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limit(rate, burst)
