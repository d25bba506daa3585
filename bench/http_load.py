"""A closed-loop HTTP load client: N processes × C connections POST one fixed body for D seconds and
report requests/s and latency percentiles. Used for quick receiver figures; the client's own CPU is
reported so that a saturated client is visible."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import time
from typing import Any

import aiohttp


async def _client(
    url: str, body: bytes, headers: dict[str, str], conns: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(loop() for _ in range(conns)))
    return {"latencies": latencies, "statuses": statuses}


def _proc(args: tuple[str, bytes, dict[str, str], int, float], out: Any) -> None:
    import uvloop

    result = uvloop.run(_client(*args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu"] = usage.ru_utime + usage.ru_stime
    out.put(result)


def run(
    url: str, body: bytes, headers: dict[str, str], procs: int, conns: int, seconds: float
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_proc, args=((url, body, headers, conns, seconds), out)) for _ in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    lat = sorted(x for r in results for x in r["latencies"])
    statuses: dict[int, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

    return {
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": statuses,
        "client_cpu_s": sum(r["cpu"] for r in results),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--body", required=True, help="file with the request body")
    p.add_argument("--header", action="append", default=[], help="Name: value")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    headers = dict(h.split(": ", 1) for h in a.header)
    with open(a.body, "rb") as f:
        body = f.read()
    print(json.dumps(run(a.url, body, headers, a.procs, a.conns, a.seconds), indent=2))


if __name__ == "__main__":
    main()
