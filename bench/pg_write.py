"""What each of the PostgreSQL sink's two ways of writing a batch costs: the direct COPY into `events`
(the common case) and the careful way (COPY into the staging table, then INSERT … ON CONFLICT DO
NOTHING, taken after a conflict). Same canonical rows (full batches of the three batching vendors),
same batch size, alternating runs on a fresh table; prints rows/s, the client's CPU µs per row and the
PostgreSQL server's (its processes' own accounting), and the careful way's ratio to the direct one.

    .venv/bin/python -m bench.pg_write [--pg DSN] [--rows 60000] [--batch 5000] [--rounds 3]

Without --pg it starts a private cluster as `python -m bench` does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import psutil

from bench import services
from bench.cpu import tree_cpu_seconds
from bench.payloads import scenarios
from bench.records import Mix, canonical
from consumers.sinks.postgres import PostgresSink
from pipeline.canonical import CanonicalEvent


@dataclass(frozen=True)
class Figures:
    rows_per_second: float
    client_us_per_row: float
    server_us_per_row: float


def _postmaster(port: int) -> int:
    """The PostgreSQL server listening on `port`, started with `-p PORT` as the bench's private
    cluster is; its backends, checkpointer and WAL writer are its children."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (proc.info["name"] or "").startswith("postgres") and f"-p {port}" in cmdline:
            return int(proc.pid)
    raise SystemExit(f"no PostgreSQL server started with -p {port} on this machine: its CPU cannot be read")


async def _one_run(dsn: str, server: int, events: list[CanonicalEvent], batch: int, careful: bool) -> Figures:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS events")
    finally:
        await conn.close()
    sink = PostgresSink(dsn)
    await sink.start()
    stored_at = datetime.now(UTC)
    try:
        if careful:
            sink.write_carefully(len(events))
        client, server_cpu, wall = time.process_time(), tree_cpu_seconds([server]), time.perf_counter()
        for start in range(0, len(events), batch):
            await sink.write(events[start : start + batch], stored_at)
        wall = time.perf_counter() - wall
        client = time.process_time() - client
        server_cpu = tree_cpu_seconds([server]) - server_cpu
    finally:
        await sink.close()
    batches = -(-len(events) // batch)
    expected = (0, batches) if careful else (batches, 0)
    if (sink.direct_writes, sink.careful_writes) != expected:
        raise RuntimeError(
            f"unexpected write path: {sink.direct_writes} direct, {sink.careful_writes} careful"
        )
    n = len(events)
    return Figures(n / wall, client / n * 1e6, server_cpu / n * 1e6)


def _median(runs: list[Figures]) -> Figures:
    return Figures(
        statistics.median(r.rows_per_second for r in runs),
        statistics.median(r.client_us_per_row for r in runs),
        statistics.median(r.server_us_per_row for r in runs),
    )


async def _measure(dsn: str, server: int, rows: int, batch: int, rounds: int) -> dict[str, Figures]:
    mix = Mix([s for s in scenarios() if s.name.endswith("-batch")])
    events = canonical(list(mix.records(rows)))
    runs: dict[str, list[Figures]] = {"direct": [], "careful": []}
    for _ in range(rounds):
        for name in runs:  # alternating, so that a noisy neighbour hits both alike
            runs[name].append(await _one_run(dsn, server, events, batch, careful=name == "careful"))
    return {name: _median(figures) for name, figures in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_write", description=__doc__.split("\n")[0])
    parser.add_argument("--pg", help="an existing server's DSN (a database is created and dropped)")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with services.postgres(args.pg, skip=False) as server:
        if server is None:
            raise SystemExit("no PostgreSQL: install it or pass --pg DSN")
        dsn = asyncio.run(server.create_database("bench_pg_write"))
        port = int(dsn.rsplit(":", 1)[1].split("/", 1)[0])
        try:
            figures = asyncio.run(_measure(dsn, _postmaster(port), args.rows, args.batch, args.rounds))
        finally:
            asyncio.run(server.drop_database(dsn))
    for name, f in figures.items():
        print(
            f"{name:8} {f.rows_per_second:9,.0f} rows/s  client {f.client_us_per_row:5.1f} µs/row"
            f"  server {f.server_us_per_row:5.1f} µs/row"
        )
    direct, careful = figures["direct"], figures["careful"]
    print(
        f"careful ÷ direct: rows/s {careful.rows_per_second / direct.rows_per_second:.2f}, "
        f"server CPU {careful.server_us_per_row / direct.server_us_per_row:.2f}"
    )


if __name__ == "__main__":
    main()
