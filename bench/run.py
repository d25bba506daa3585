"""`python -m bench`: one run that starts what it needs (private Kafka, PostgreSQL, the pipeline's
processes), measures the limits and the pipeline's figures side by side, and writes
bench/results/<date>.json, .md and PNG charts."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import consumer_figures, e2e, limits, receiver_figures, report, services, wrk
from bench.payloads import Scenario, by_name, scenarios
from bench.procs import receiver_topics_env
from bench.records import Mix, canonical, prefill
from pipeline import topics
from pipeline.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short measurements; finishes in under 3 minutes")
    p.add_argument("--kafka", help="use this broker instead of starting a private one")
    p.add_argument(
        "--pg", help="PostgreSQL admin DSN to create throw-away databases in (else a private cluster)"
    )
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL figures")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="receiver (and no-op server) processes"
    )
    p.add_argument("--seconds", type=float, help="length of each load measurement (default 10, quick 2)")
    p.add_argument("--connections", type=int, default=64, help="load client connections")
    p.add_argument(
        "--events", type=int, help="events pre-filled for the consumer figures (default 600k, quick 200k)"
    )
    p.add_argument("--only", default="limits,receiver,consumers,e2e", help="comma-separated parts to run")
    p.add_argument("--scenarios", help="comma-separated request kinds (default all)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a setting for the pipeline's processes, e.g. producer_linger_ms=10 (repeatable)",
    )
    p.add_argument(
        "--profile", action="store_true", help="also record py-spy profiles under load (extra runs)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not wrk.available():
        print(f"error: {wrk.INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
        import psutil  # noqa: F401
    except ImportError:
        print("error: the bench needs its extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    began = time.monotonic()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    total_events = args.events or (200_000 if args.quick else 600_000)
    fractions = [0.5, 0.9] if args.quick else [0.25, 0.5, 0.75, 0.9]
    parts = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="eventpipe-bench-"))
    logdir = workdir / "logs"
    logdir.mkdir()
    profile_dir = args.out / f"{stamp}-profiles" if args.profile else None
    if profile_dir:
        profile_dir.mkdir()
    given = dict(item.split("=", 1) for item in args.set)
    defaults = Settings().replace(**{k: type(getattr(Settings(), k))(v) for k, v in given.items()})
    results: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "workers": args.workers,
            "seconds": seconds,
            "connections": args.connections,
            "client": f"wrk, 2 threads, {args.connections} connections, Lua script bench/lua/load.lua",
            "producer": {
                "linger_ms": defaults.producer_linger_ms,
                "compression": defaults.producer_compression,
            },
            "consumer_batch_max_records": defaults.batch_max_records,
            "consumer_batch_max_bytes": defaults.batch_max_bytes,
            "settings_given": args.set,
        }
    }
    print(f"eventpipe bench ({'quick' if args.quick else 'full'}), work dir {workdir}", flush=True)
    try:
        with services.kafka(args.kafka, workdir) as broker, services.postgres(args.pg, args.no_pg) as pg:
            results["meta"]["kafka"] = "given" if args.kafka else "private broker"
            results["meta"]["postgres"] = pg.note if pg else "skipped"
            _run(
                args,
                parts,
                results,
                broker,
                pg,
                workdir,
                logdir,
                profile_dir,
                seconds,
                total_events,
                fractions,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["ratios"] = report.ratios(results)
    results["single_event_budget"] = report.single_event_budget(results)
    results["targets"] = report.targets(results, results["ratios"])
    results["client_check"] = _client_check(results)
    results["meta"]["took_s"] = round(time.monotonic() - began, 1)
    stem = args.out / stamp
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = report.markdown(results)
    stem.with_suffix(".md").write_text(table)
    charts = report.charts(results, stem)
    print()
    print(table)
    print(f"wrote {stem}.json, {stem}.md, " + ", ".join(c.name for c in charts))
    return 0


def _client_check(results: dict[str, Any]) -> str:
    rec = results.get("receiver", {})
    http = results.get("limits", {}).get("L_http", {})
    if not rec:
        return ""
    shares = [f["max"]["client_cpu_s"] / f["max"]["seconds"] for f in rec.values() if f["max"]["seconds"]]
    parts = [f"wrk used at most {max(shares):.0%} of one core (of 2 threads) while driving the receiver"]
    pairs = [(n, f["max"]["rps"], http[n]["rps"]) for n, f in rec.items() if n in http]
    if pairs:
        spread = ", ".join(f"{n} {h / r:.1f}×" for n, r, h in pairs)
        parts.append(f"the same client drove the no-op server faster by: {spread}")
    one = results.get("client_one_thread")
    if one:
        parts.append(
            f"with one wrk thread instead of two the receiver gave {one['rps']:,.0f} vs {one['two_threads_rps']:,.0f} req/s "
            f"({one['scenario']}): more client threads buy nothing when the client is not the limit"
        )
    return "; ".join(parts) + "."


def _run(
    args: argparse.Namespace,
    parts: set[str],
    results: dict[str, Any],
    broker: services.Broker,
    pg: services.Postgres | None,
    workdir: Path,
    logdir: Path,
    profile_dir: Path | None,
    seconds: float,
    total_events: int,
    fractions: list[float],
) -> None:
    bootstrap = broker.bootstrap
    all_scenarios = scenarios()
    chosen = all_scenarios
    if args.scenarios:
        named = by_name(all_scenarios)
        chosen = [named[n] for n in args.scenarios.split(",")]
    batches: list[Scenario] = [s for s in all_scenarios if s.batched]
    settings, base_env = receiver_topics_env(
        bootstrap, workdir, "bench", **dict(item.split("=", 1) for item in args.set)
    )
    prefix = settings.raw_topic.removesuffix(".raw")  # bench.<tag>: the run's other topics
    mix = Mix(batches)
    sample = list(mix.records(min(total_events, 60_000 if args.quick else 200_000), start=10_000_000))
    events = canonical(sample)

    if "limits" in parts:
        print("limits", flush=True)
        lim: dict[str, Any] = {}
        lim["L_http"] = limits.l_http(chosen, args.workers, seconds, args.connections, logdir)
        named = by_name(all_scenarios)
        steady = 1 if args.quick else 2
        lim["L_kafka"] = {
            kind: limits.l_kafka(
                bootstrap,
                named[f"topsort-{kind}"].body(),
                settings,
                workdir,
                kind,
                producers=args.workers,
                windows=steady,
            )
            for kind in ("batch", "single")
        }
        if pg is not None:
            dsn = asyncio.run(pg.create_database("bench_lpg"))
            try:
                lim["L_pg"] = asyncio.run(limits.l_pg(dsn, events, 20_000))
            finally:
                asyncio.run(pg.drop_database(dsn))
        lim["L_sqlite"] = asyncio.run(limits.l_sqlite(workdir, events, 20_000))
        results["limits"] = lim

    if "receiver" in parts:
        print("receiver", flush=True)
        results["receiver"] = receiver_figures.measure(
            base_env, broker, settings.raw_topic, chosen, args.workers, seconds, args.connections,
            fractions, logdir, profile_dir,
        )  # fmt: skip
        single = next((s for s in chosen if not s.batched), None)
        if single is not None:
            from bench import procs

            with procs.receiver(base_env, args.workers, logdir) as (url, _):
                one = wrk.run(url, single, seconds, connections=args.connections, threads=1)
            results["client_one_thread"] = {
                "scenario": single.name,
                "rps": one.rps,
                "two_threads_rps": results["receiver"][single.name]["max"]["rps"],
            }

    sinks: list[tuple[str, str]] = []
    if "consumers" in parts or "e2e" in parts:
        if pg is not None:
            sinks.append(("postgresql", "pg"))
        sinks.append(("sqlite", "sqlite"))

    if "consumers" in parts:
        print("consumers", flush=True)
        expected = mix.event_count(total_events)
        print(
            f"  each run fills its own topic with {expected:,} events once its group has settled", flush=True
        )
        filled: list[tuple[int, int]] = []
        cons: dict[str, Any] = {}
        for kind, _ in sinks:
            for count in (1, 2):
                url = _fresh_sink(kind, pg, workdir)
                asyncio.run(consumer_figures.fresh_sink(url))
                topic = f"{prefix}.fill.{kind}.x{count}"
                asyncio.run(topics.ensure(settings.replace(raw_topic=topic, dlq_topic=topic + ".dlq")))

                def fill(topic: str = topic) -> None:
                    filled.append(asyncio.run(prefill(bootstrap, topic, mix.records(total_events))))

                env = {**base_env, "EVENTPIPE_RAW_TOPIC": topic, "EVENTPIPE_DLQ_TOPIC": topic + ".dlq",
                       "EVENTPIPE_SINK": url, "EVENTPIPE_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}"}  # fmt: skip
                prof = profile_dir / f"consumer-{kind}-x{count}.txt" if profile_dir and count == 1 else None
                fig = consumer_figures.drain(
                    env, count, expected, logdir, max(120.0, expected / 2000), prof,
                    fill=fill, partitions=settings.raw_partitions,
                )  # fmt: skip
                fig["rows"] = asyncio.run(consumer_figures.rows(url))
                cons[f"{kind} x{count}"] = fig
                if prof is not None and prof.exists():
                    from bench import profile

                    prof.with_suffix(".top.txt").write_text(profile.summarise(prof))
                print(
                    f"  {kind} x{count}: {fig.get('events_per_s', 0):,.0f} ev/s, "
                    f"{fig.get('cpu_s_per_m_events') or 0:,.1f} CPU-s/M ev, rows {fig['rows']:,} of {expected:,}",
                    flush=True,
                )
                _drop_sink(kind, url, pg)
        n_records, n_bytes = filled[0]
        print(f"  each fill: {n_records:,} records ({n_bytes / 1e6:,.0f} MB)", flush=True)
        results["consumers"] = cons

    if "e2e" in parts:
        print("end to end", flush=True)
        kind = sinks[0][0]
        url = _fresh_sink(kind, pg, workdir)
        asyncio.run(consumer_figures.fresh_sink(url))
        topic = f"{prefix}.e2e"
        e2e_settings = settings.replace(raw_topic=topic, dlq_topic=topic + ".dlq")
        asyncio.run(topics.ensure(e2e_settings))
        env = {**base_env, "EVENTPIPE_RAW_TOPIC": topic, "EVENTPIPE_DLQ_TOPIC": topic + ".dlq",
               "EVENTPIPE_SINK": url, "EVENTPIPE_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}"}  # fmt: skip
        named = by_name(all_scenarios)
        res = e2e.measure(
            env, env, url, named["topsort-batch"], args.workers, 2, seconds * 2, args.connections, logdir,
            settings.raw_partitions,
        )  # fmt: skip
        res["sink"] = kind
        results["e2e"] = res
        _drop_sink(kind, url, pg)


def _fresh_sink(kind: str, pg: services.Postgres | None, workdir: Path) -> str:
    if kind == "postgresql":
        assert pg is not None
        return asyncio.run(pg.create_database())
    path = Path(tempfile.mkdtemp(dir=workdir, prefix="sqlite-")) / "events.db"
    return f"sqlite:///{path}"


def _drop_sink(kind: str, url: str, pg: services.Postgres | None) -> None:
    if kind == "postgresql" and pg is not None:
        asyncio.run(pg.drop_database(url))
