"""The receiver's bucket stores: the in-process one, and the file-backed table that `--workers N`
processes share — several processes taking from one bucket admit exactly its burst, not one each."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.rate_limits import LimitTable
from pipeline.token_bucket import Limit
from producers.receiver.buckets import RateLimiter, SharedBuckets

A = ("shop-a", "dfinery", "")
B = ("shop-b", "dfinery", "")
TABLE = LimitTable((A, B), (Limit(rate=0.01, burst=3), Limit(rate=0.01, burst=3)))
NOW = 1000.0


def test_local_limiter_admits_the_burst_per_key_then_refuses_with_retry_after() -> None:
    limiter = RateLimiter.local(TABLE, NOW)
    assert [limiter.acquire(A, NOW).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.acquire(A, NOW) == (False, 100)
    assert limiter.acquire(B, NOW).allowed  # another tenant's bucket is untouched
    assert limiter.acquire(A, NOW + 100).allowed  # refilled after Retry-After


def test_a_key_without_a_limit_is_always_admitted() -> None:
    limiter = RateLimiter.local(TABLE, NOW)
    assert all(limiter.acquire(("shop-a", "topsort", ""), NOW).allowed for _ in range(1000))


def test_two_attachments_of_the_shared_table_see_one_bucket(tmp_path: Path) -> None:
    path = tmp_path / "buckets"
    SharedBuckets.create(path, TABLE.limits, NOW)
    first, second = RateLimiter.shared(TABLE, path), RateLimiter.shared(TABLE, path)
    try:
        taken = [first.acquire(A, NOW).allowed, second.acquire(A, NOW).allowed, first.acquire(A, NOW).allowed]
        assert taken == [True, True, True]
        assert second.acquire(A, NOW) == (False, 100)
        assert first.acquire(B, NOW).allowed
    finally:
        first.close()
        second.close()


TRIES = 20_000
SHARED_TABLE = LimitTable((A,), (Limit(rate=0.01, burst=TRIES),))


def _hammer(path: Path, start: Barrier, results: multiprocessing.Queue[int]) -> None:
    limiter = RateLimiter.shared(SHARED_TABLE, path)
    try:
        start.wait(timeout=60)
        results.put(sum(limiter.acquire(A, NOW).allowed for _ in range(TRIES)))
    finally:
        limiter.close()


def test_processes_taking_from_one_shared_bucket_admit_exactly_its_burst(tmp_path: Path) -> None:
    path = tmp_path / "buckets"
    SharedBuckets.create(path, SHARED_TABLE.limits, NOW)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = ctx.Queue()
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_hammer, args=(path, start, results)) for _ in range(3)]
    for proc in procs:
        proc.start()
    admitted = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    # They take at the same time, and the bucket runs dry while they do: an unsynchronised
    # read-modify-write would lose updates and admit more than the burst in total.
    assert sum(admitted) == TRIES


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"NOTBUCKT" + bytes(8 + 2 * 16), id="wrong-magic"),
    ],
)
def test_a_file_that_is_not_this_table_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "buckets"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        SharedBuckets(path, 2)


def test_a_table_built_for_other_limits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "buckets"
    SharedBuckets.create(path, SHARED_TABLE.limits, NOW)
    with pytest.raises(ConfigError, match="do not hold 2 rate limit buckets"):
        SharedBuckets(path, 2)
