"""What the receiver's Kafka transactions (EVENTPIPE_KAFKA_TRANSACTIONAL_ID) cost: the same receiver
(one worker, a private broker) with and without them, interleaved (plain, transactions, plain, ...) so
that each pair shares the machine's state. Per run, single-event Topsort requests from wrk: closed-loop
requests/s and latency; then a paced run at `--paced` requests/s (the same load for both modes, so the
latency compares); the receiver's and the broker's CPU per request; records per transaction.

    python -m bench.transactions [--seconds 10] [--pairs 2] [--paced 2000] [--connections 64]

Compare within a pair: the machine's speed drifts between runs (docs/PERFORMANCE.md)."""

from __future__ import annotations

import argparse
import json
import tempfile
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import procs, services, wrk
from bench.cpu import CpuMeter
from bench.payloads import by_name, scenarios
from bench.receiver_figures import records_in

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "transactions"
WARMUP_SECONDS = 4.0


def counters(url: str) -> dict[str, float]:
    """The receiver's transactions by outcome and its batches' records, from /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # noqa: S310 - our loopback URL
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "eventpipe_kafka_transactions_total":
                out[sample.labels["outcome"]] = sample.value
            elif sample.name == "eventpipe_kafka_produce_batch_records_sum":
                out["records"] = sample.value
    return out


def one_run(
    mode: str, broker: services.Broker, workdir: Path, seconds: float, connections: int, paced: float
) -> dict[str, Any]:
    extra = {"kafka_transactional_id": f"bench-{uuid.uuid4().hex[:8]}"} if mode == "transactions" else {}
    settings, env = procs.receiver_topics_env(broker.bootstrap, workdir, "bench-txn", **extra)
    scenario = by_name(scenarios())["topsort-single"]
    with procs.receiver(env, 1, workdir) as (url, proc):
        wrk.run(url, scenario, WARMUP_SECONDS, connections=connections, unique=True)
        before_records = records_in(broker.bootstrap, settings.raw_topic)
        before = counters(url)
        meter = CpuMeter([proc.pid]).start()
        broker_meter = CpuMeter([broker.pid] if broker.pid else []).start()
        top = wrk.run(url, scenario, seconds, connections=connections, unique=True)
        cpu, broker_cpu = meter.stop(), broker_meter.stop()
        after = counters(url)
        in_kafka = records_in(broker.bootstrap, settings.raw_topic) - before_records
        steady = wrk.run(url, scenario, seconds, connections=connections, rate=paced, unique=True)
    records = after.get("records", 0.0) - before.get("records", 0.0)
    committed = after.get("committed", 0.0) - before.get("committed", 0.0)
    aborted = after.get("aborted", 0.0) - before.get("aborted", 0.0)
    return {
        "mode": mode,
        "closed_loop": top.as_dict(),
        "paced": steady.as_dict(),
        "receiver_cpu_us_per_request": cpu / top.ok * 1e6 if top.ok else None,
        "broker_cpu_us_per_request": broker_cpu / top.ok * 1e6 if broker.pid and top.ok else None,
        "records_per_transaction": records / committed if committed else None,
        "transactions_aborted": aborted,
        # End offsets count the transactions' commit markers too: at least one offset per 2xx.
        "kafka_offsets_ge_2xx": in_kafka >= top.ok,
    }


def row(r: dict[str, Any]) -> str:
    c, p = r["closed_loop"], r["paced"]
    per_txn = r["records_per_transaction"]
    broker = r["broker_cpu_us_per_request"]
    return (
        f"| {r['mode']} | {c['rps']:,.0f} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | "
        f"{p['rps']:,.0f} | {p['p50_ms']:.2f} / {p['p99_ms']:.1f} | {r['receiver_cpu_us_per_request']:.0f} | "
        f"{'-' if broker is None else f'{broker:.0f}'} | {'-' if per_txn is None else f'{per_txn:.1f}'} | "
        f"{r['transactions_aborted']:.0f} | {'yes' if r['kafka_offsets_ge_2xx'] else 'NO'} |"
    )


HEADER = (
    "| mode | closed loop req/s | p50 / p99 ms | paced req/s | p50 / p99 ms | receiver CPU µs/req | "
    "broker CPU µs/req | records per transaction | aborted | Kafka ≥ 2xx |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transactions", description=__doc__.split("\n\n")[0])
    p.add_argument("--kafka", help="use this broker instead of starting a private one (no broker CPU then)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    p.add_argument("--pairs", type=int, default=2, help="plain/transactions pairs, interleaved")
    p.add_argument("--paced", type=float, default=2000.0, help="requests/s of the paced run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-txn-") as tmp:
        work = Path(tmp)
        with services.kafka(args.kafka, work / "kafka") as broker:
            for pair in range(args.pairs):
                for mode in ("plain", "transactions"):
                    result = one_run(mode, broker, work, args.seconds, args.connections, args.paced)
                    result["pair"] = pair + 1
                    runs.append(result)
                    print(row(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=2)
    )
    table = "\n".join([HEADER, *(row(r) for r in runs)])
    (args.out / f"{stamp}.md").write_text(
        f"# Receiver with and without Kafka transactions, {stamp}\n\n"
        f"`python -m bench.transactions --seconds {args.seconds:g} --pairs {args.pairs} --paced {args.paced:g}`; "
        "one receiver worker, single-event Topsort requests; pairs interleaved.\n\n" + table + "\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
