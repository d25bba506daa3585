"""What a CORS preflight costs the receiver against the POST it precedes, measured in one run against
one `eventpipe receiver` process with the real broker: receiver CPU µs per request (the kernel's own
counters), requests/s and latency under wrk's closed loop, and the records each kind wrote to Kafka
(a preflight must write none). Topsort's preflight names no tenant; Retail Rocket's carries its apiKey
in the query, so the receiver also looks its tenant up and applies its allowed_origins. The POSTs are
sent as a browser sends them (with Origin), and once without, for what the CORS headers add to a POST.

    .venv/bin/python -m bench.preflight [--kafka HOST:PORT] [--seconds 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, services, wrk
from bench.cpu import CpuMeter
from bench.payloads import API_KEY, PARTNER_ID, Scenario, by_name, scenarios
from bench.receiver_figures import records_in

RESULTS = Path(__file__).with_name("results")
ORIGIN = "https://shop.example"
WARMUP_SECONDS = 3.0
# What Chromium sends before @topsort/sdk's POST (tests/browser shows it on the wire).
PREFLIGHT_HEADERS = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "accept,authorization,content-type,x-ua",
}


def kinds() -> list[Scenario]:
    named = by_name(scenarios())
    topsort, rr = named["topsort-single"], named["retailrocket-single"]
    browser = {"Origin": ORIGIN}
    return [
        dataclasses.replace(
            topsort,
            name="topsort-preflight",
            method="OPTIONS",
            headers=PREFLIGHT_HEADERS,
            template="",
            events=0,
        ),
        dataclasses.replace(topsort, name="topsort-post", headers={**topsort.headers, **browser}),
        dataclasses.replace(topsort, name="topsort-post-no-origin"),
        dataclasses.replace(
            rr,
            name="retailrocket-preflight",
            method="OPTIONS",
            path=f"/1.0/view?apiKey={API_KEY}&partnerId={PARTNER_ID}",
            headers={**PREFLIGHT_HEADERS, "Access-Control-Request-Headers": "content-type"},
            template="",
            events=0,
        ),
        dataclasses.replace(rr, name="retailrocket-post", headers={**rr.headers, **browser}),
    ]


def measure(
    url: str, pid: int, bootstrap: str, topic: str, kind: Scenario, seconds: float, connections: int
) -> dict[str, Any]:
    wrk.run(url, kind, WARMUP_SECONDS, connections=connections)
    before = records_in(bootstrap, topic)
    meter = CpuMeter([pid]).start()
    load = wrk.run(url, kind, seconds, connections=connections)
    cpu = meter.stop()
    return {
        "kind": kind.name,
        "method": kind.method,
        "rps": round(load.rps, 1),
        "p50_ms": round(load.p50_ms, 2),
        "p99_ms": round(load.p99_ms, 2),
        "ok": load.ok,
        "errors": load.errors,
        "receiver_cpu_us_per_request": round(cpu / load.ok * 1e6, 1) if load.ok else None,
        "client_cpu_share": round(load.client_cpu_share, 2),
        "kafka_records": records_in(bootstrap, topic) - before,
    }


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per kind, the round with the median receiver CPU per request: kinds are measured in turn, round
    after round, so a noisy moment on a shared machine does not fall on one kind only."""
    rows = []
    for per_kind in zip(*rounds, strict=True):
        ranked = sorted(per_kind, key=lambda r: r["receiver_cpu_us_per_request"] or 0.0)
        row = dict(ranked[len(ranked) // 2])
        row["cpu_us_by_round"] = [r["receiver_cpu_us_per_request"] for r in per_kind]
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    cpu = {r["kind"]: r["receiver_cpu_us_per_request"] for r in rows}
    out = {}
    for vendor in ("topsort", "retailrocket"):
        pre, post = cpu.get(f"{vendor}-preflight"), cpu.get(f"{vendor}-post")
        if pre and post:
            out[f"{vendor}: preflight / POST, receiver CPU per request"] = round(pre / post, 3)
    with_origin, without = cpu.get("topsort-post"), cpu.get("topsort-post-no-origin")
    if with_origin and without:
        out["topsort: POST with Origin / without, receiver CPU per request"] = round(with_origin / without, 3)
    return out


def render(rows: list[dict[str, Any]], shares: dict[str, float]) -> str:
    lines = [
        "| request | req/s | p50 ms | p99 ms | receiver CPU µs/request (median; each round) "
        "| Kafka records | wrk CPU share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        each = ", ".join(f"{v:g}" for v in r["cpu_us_by_round"])
        lines.append(
            f"| {r['kind']} ({r['method']}) | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"**{r['receiver_cpu_us_per_request']}** ({each}) | {r['kafka_records']:,} | "
            f"{r['client_cpu_share']:.0%} |"
        )
    lines.append("")
    lines.extend(f"- {name}: {value}" for name, value in shares.items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.preflight", description=__doc__)
    p.add_argument("--kafka", help="use this broker instead of starting a private one")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    p.add_argument("--connections", type=int, default=64, help="load client connections")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each kind, taken in turn")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the results (JSON and Markdown) go")
    args = p.parse_args(argv)
    if not wrk.available():
        raise SystemExit(wrk.INSTALL_HINT)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-preflight-") as tmp:
        workdir = Path(tmp)
        with services.kafka(args.kafka, workdir) as broker:
            settings, env = procs.receiver_topics_env(broker.bootstrap, workdir, "bench")
            rounds: list[list[dict[str, Any]]] = []
            # The machine's load says how far to trust the figures (others' work inflates CPU per request).
            load_before = os.getloadavg()[0]
            with procs.receiver(env, 1, workdir) as (url, proc):
                for n in range(args.rounds):
                    rounds.append([])
                    for kind in kinds():
                        row = measure(
                            url,
                            proc.pid,
                            broker.bootstrap,
                            settings.raw_topic,
                            kind,
                            args.seconds,
                            args.connections,
                        )
                        print(f"round {n + 1}: {json.dumps(row)}", flush=True)
                        rounds[-1].append(row)
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    rows = median_rows(rounds)
    shares = ratios(rows)
    table = (
        render(rows, shares)
        + f"\n- load average (1 min) before / after: {load['before']} / {load['after']} on {load['cpus']} CPUs"
    )
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"rows": rows, "ratios": shares, "rounds": rounds, "load_average": load}
    (args.out / f"{stamp}-preflight.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.out / f"{stamp}-preflight.md").write_text(
        f"# Preflight against POST, {stamp}\n\n`python -m bench.preflight` ({args.rounds} rounds, "
        f"{args.seconds:g} s each, {args.connections} connections, one receiver process)\n\n{table}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
