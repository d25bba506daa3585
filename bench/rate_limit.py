"""What a rate limit check costs the receiver per request: RateLimiter.acquire on the in-process
buckets, on the shared file table of `--workers N` (one process; then N processes hammering the same
bucket at once, the worst case for the lock), and on a caller without a limit. Prints microseconds per
call and the shared table's ratio to the in-process store, measured in this run.

    .venv/bin/python -m bench.rate_limit [--calls 200000] [--procs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from pipeline.rate_limits import BucketKey, LimitTable
from pipeline.token_bucket import Limit
from producers.receiver.buckets import RateLimiter, SharedBuckets

KEY: BucketKey = ("shop-a", "dfinery", "")
# Many tenants in the table, as in production; the one measured never runs dry (each call refills).
TABLE = LimitTable(
    (*((f"shop-{n}", "dfinery", "") for n in range(999)), KEY),
    tuple(Limit(rate=1e9, burst=1e9) for _ in range(1000)),
)


def _per_call_us(limiter: RateLimiter, key: BucketKey, calls: int) -> float:
    clock = time.monotonic
    started = time.perf_counter()
    for _ in range(calls):
        limiter.acquire(key, clock())
    return (time.perf_counter() - started) / calls * 1e6


def _contender(path: Path, calls: int, start: Barrier, out: multiprocessing.Queue[float]) -> None:
    limiter = RateLimiter.shared(TABLE, path)
    start.wait()
    out.put(_per_call_us(limiter, KEY, calls))
    limiter.close()


def run(calls: int, procs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "buckets"
        SharedBuckets.create(path, TABLE.limits, time.monotonic())
        local = RateLimiter.local(TABLE, time.monotonic())
        shared = RateLimiter.shared(TABLE, path)
        unlimited_us = _per_call_us(local, ("shop-x", "topsort", ""), calls)
        local_us = _per_call_us(local, KEY, calls)
        shared_us = _per_call_us(shared, KEY, calls)
        shared.close()
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue[float] = ctx.Queue()
        start = ctx.Barrier(procs)
        workers = [ctx.Process(target=_contender, args=(path, calls, start, out)) for _ in range(procs)]
        for w in workers:
            w.start()
        contended = [out.get() for _ in workers]
        for w in workers:
            w.join()
    return {
        "calls": calls,
        "unlimited_us": round(unlimited_us, 3),
        "local_us": round(local_us, 3),
        "shared_us": round(shared_us, 3),
        "shared_contended_us": [round(us, 3) for us in contended],
        "shared_over_local": round(shared_us / local_us, 2),
        # The share of one core the shared check takes at 5,000 requests/s.
        "core_share_at_5k_rps": round(shared_us * 5000 / 1e6, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200_000)
    p.add_argument("--procs", type=int, default=2, help="processes contending for one bucket")
    a = p.parse_args()
    print(json.dumps(run(a.calls, a.procs), indent=2))


if __name__ == "__main__":
    main()
