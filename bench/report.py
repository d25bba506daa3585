"""The run's outputs: ratios to the limits, the targets met or not, the Markdown table and the PNG
charts (throughput vs offered load, latency percentiles vs load, figures as shares of their limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RECEIVER_SINGLE_SHARE = 0.6
RECEIVER_BATCH_EVENTS = 100_000
PG_SHARE = 0.5
PG_TWO_CONSUMERS = 50_000
E2E_P99_MS = 250
RECEIVER_CPU_PER_M = 10
CONSUMER_CPU_PER_M = 20


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    limits = results.get("limits", {})
    out: dict[str, Any] = {}
    http = limits.get("L_http", {})
    for name, fig in results.get("receiver", {}).items():
        out[f"receiver {name} ÷ L_http"] = _ratio(fig["max"]["rps"], http.get(name, {}).get("rps"))
        kafka = limits.get("L_kafka", {}).get("batch" if "batch" in name else "single")
        if kafka:
            out[f"receiver {name} Kafka bytes/s ÷ L_kafka"] = _ratio(
                fig["kafka_bytes_per_s"], kafka["bytes_per_s"]
            )
    for key, fig in results.get("consumers", {}).items():
        limit = limits.get("L_pg" if key.startswith("postgresql") else "L_sqlite", {}).get("rows_per_s")
        out[f"consumers {key} ÷ {'L_pg' if key.startswith('postgresql') else 'L_sqlite'}"] = _ratio(
            fig.get("events_per_s"), limit
        )
    return out


def targets(results: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    rec = results.get("receiver", {})
    cons = results.get("consumers", {})
    e2e = results.get("e2e") or {}
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": value, "goal": goal, "met": met})

    for name, fig in rec.items():
        if not fig.get("batched"):
            v = r.get(f"receiver {name} ÷ L_http")
            add(
                f"receiver {name} ÷ L_http",
                v,
                f"≥ {RECEIVER_SINGLE_SHARE}",
                None if v is None else v >= RECEIVER_SINGLE_SHARE,
            )
    for name, fig in rec.items():
        if fig.get("batched"):
            v = fig["events_per_s"] if fig.get("durable_ok") else 0.0
            add(
                f"receiver {name} events/s durable",
                v,
                f"≥ {RECEIVER_BATCH_EVENTS:,}",
                v >= RECEIVER_BATCH_EVENTS,
            )
            c = fig.get("receiver_cpu_s_per_m_events")
            add(
                f"receiver {name} CPU-s / M events",
                c,
                f"≤ {RECEIVER_CPU_PER_M}",
                None if c is None else c <= RECEIVER_CPU_PER_M,
            )
    pg = [v for k, v in r.items() if k.startswith("consumers postgresql") and v is not None]
    if pg:
        add("consumers PostgreSQL ÷ L_pg (best)", max(pg), f"≥ {PG_SHARE}", max(pg) >= PG_SHARE)
    two = cons.get("postgresql x2", {}).get("events_per_s")
    if two is not None:
        add(
            "consumers PostgreSQL, 2 processes, events/s",
            two,
            f"≥ {PG_TWO_CONSUMERS:,}",
            two >= PG_TWO_CONSUMERS,
        )
    for key, fig in cons.items():
        c = fig.get("cpu_s_per_m_events")
        add(
            f"consumers {key} CPU-s / M events",
            c,
            f"≤ {CONSUMER_CPU_PER_M}",
            None if c is None else c <= CONSUMER_CPU_PER_M,
        )
    half = e2e.get("half_load") or {}
    if half:
        p99 = half.get("row_p99_ms")
        add(
            "request-to-row p99 at 50% (ms)",
            p99,
            f"≤ {E2E_P99_MS}",
            None if p99 is None else p99 <= E2E_P99_MS,
        )
    return rows


def single_event_budget(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per single-event request kind, the CPU microseconds one request costs each process on the path
    (the no-op server for comparison; the receiver, the broker and the load client for real) and the
    cores that the target rate, RECEIVER_SINGLE_SHARE × L_http, would take at those costs, and would
    take if the receiver cost no more than the no-op handler (the floor). A floor above the machine's
    cores means no aiohttp receiver that writes each request to this broker can reach the target here."""
    http = results.get("limits", {}).get("L_http", {})
    cores = results["meta"]["cpus"]
    rows = []
    for name, fig in results.get("receiver", {}).items():
        if fig.get("batched") or name not in http:
            continue
        noop = http[name].get("server_cpu_us_per_request")
        costs = [fig.get(k) for k in ("receiver_cpu_us_per_request", "broker_cpu_us_per_request")]
        client = fig.get("client_cpu_us_per_request")
        target_rps = RECEIVER_SINGLE_SHARE * http[name]["rps"]
        known = [c for c in (*costs, client) if c is not None]
        rows.append(
            {
                "request": name,
                "noop_us": noop,
                "receiver_us": costs[0],
                "broker_us": costs[1],
                "records_per_batch": fig.get("records_per_batch"),
                "client_us": client,
                "receiver_over_noop": _ratio(costs[0], noop),
                "target_rps": target_rps,
                "cores_needed": target_rps * sum(known) / 1e6 if known else None,
                # A receiver that cost no more than the no-op handler, with the same broker and client.
                "cores_floor": target_rps * sum(c for c in (noop, costs[1], client) if c is not None) / 1e6,
                # What the machine's cores leave per request, at the target rate, for all the receiver
                # does beyond the no-op handler (auth, validation, metrics, the Kafka client).
                "us_left": cores * 1e6 / target_rps
                - sum(c for c in (noop, costs[1], client) if c is not None),
            }
        )
    return rows


def _f(v: Any, digits: int = 0) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    limits = results.get("limits", {})
    lines = [
        f"## eventpipe bench — {meta['started']} ({'quick' if meta['quick'] else 'full'}, {meta['took_s']:.0f} s)",
        "",
        f"Machine: {meta['cpus']} CPUs, load average at start {meta['loadavg_start']}; receiver workers: "
        f"{meta['workers']}; load client: {meta['client']}; {meta['seconds']:g} s per measurement. "
        f"Kafka: {meta['kafka']}; PostgreSQL: {meta['postgres']}.",
        "",
        "### Limits",
        "",
        "| limit | payload | figure |",
        "| --- | --- | --- |",
    ]
    for name, fig in limits.get("L_http", {}).items():
        lines.append(f"| L_http | {name} | {_f(fig['rps'])} req/s (p99 {_f(fig['p99_ms'], 1)} ms) |")
    for name, fig in limits.get("L_kafka", {}).items():
        lines.append(
            f"| L_kafka | {name} record, {fig['record_bytes']:,} B | {_f(fig['records_per_s'])} records/s = "
            f"{fig['bytes_per_s'] / 1e6:,.1f} MB/s |"
        )
    for key in ("L_pg", "L_sqlite"):
        if key in limits:
            lines.append(
                f"| {key} | canonical rows, batches of {limits[key]['batch']:,} | {_f(limits[key]['rows_per_s'])} rows/s |"
            )
    r = results.get("ratios", {})
    lines += [
        "",
        "### Receiver",
        "",
        "| request | req/s | events/s | ÷ L_http | Kafka MB/s | ÷ L_kafka | p50 / p99 ms at 50% | p50 / p99 ms at 90% | CPU-s / M events | 2xx durable in Kafka |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, fig in results.get("receiver", {}).items():
        at = {round(p["fraction"], 2): p for p in fig["curve"]}
        half, ninety = at.get(0.5, {}), at.get(0.9, {})
        lines.append(
            f"| {name} | {_f(fig['max']['rps'])} | {_f(fig['events_per_s'])} | {_f(r.get(f'receiver {name} ÷ L_http'), 2)} | "
            f"{fig['kafka_bytes_per_s'] / 1e6:,.2f} | {_f(r.get(f'receiver {name} Kafka bytes/s ÷ L_kafka'), 2)} | "
            f"{_f(half.get('p50_ms'), 1)} / {_f(half.get('p99_ms'), 1)} | {_f(ninety.get('p50_ms'), 1)} / {_f(ninety.get('p99_ms'), 1)} | "
            f"{_f(fig['receiver_cpu_s_per_m_events'], 1)} | {_f(fig['durable_ok'])} ({fig['records_durable']:,} records) |"
        )
    budget = results.get("single_event_budget") or []
    if budget:
        lines += [
            "",
            f"### Single-event requests: CPU µs per request, and the cores {RECEIVER_SINGLE_SHARE} × L_http would take",
            "",
            "| request | no-op server | receiver | receiver ÷ no-op | broker | records per Kafka batch | load client | "
            f"{RECEIVER_SINGLE_SHARE} × L_http req/s | cores needed (of {meta['cpus']}) | floor: receiver at no-op cost | "
            "µs per request left for the receiver's own work |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for b in budget:
            lines.append(
                f"| {b['request']} | {_f(b['noop_us'])} | {_f(b['receiver_us'])} | {_f(b['receiver_over_noop'], 1)} | "
                f"{_f(b['broker_us'])} | {_f(b.get('records_per_batch'), 1)} | {_f(b['client_us'])} | "
                f"{_f(b['target_rps'])} | {_f(b['cores_needed'], 2)} | "
                f"{_f(b['cores_floor'], 2)} | {_f(b.get('us_left'))} |"
            )
    lines += [
        "",
        "### Consumers (stored events/s; each run's records written once its group has settled: full batches of the three batching vendors)",
        "",
        "| sink × processes | events/s | ÷ limit | CPU-s / M events | all rows stored |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, fig in results.get("consumers", {}).items():
        lim = "L_pg" if key.startswith("postgresql") else "L_sqlite"
        lines.append(
            f"| {key} | {_f(fig.get('events_per_s'))} | {_f(r.get(f'consumers {key} ÷ {lim}'), 2)} | "
            f"{_f(fig.get('cpu_s_per_m_events'), 1)} | {_f(fig.get('complete'))} |"
        )
    e2e = results.get("e2e")
    if e2e:
        h = e2e["half_load"]
        lines += [
            "",
            f"### End to end ({e2e['scenario']}, {e2e['receiver_workers']} receiver workers, {e2e['consumers']} consumers, {e2e.get('sink', '')})",
            "",
            "| accepted ev/s (max) | stored during load ev/s | sustained ev/s (incl. drain) | at 50%: ev/s | request-to-row p50 / p99 ms | committed ≤ 250 ms | receiver CPU-s / M | consumer CPU-s / M |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {_f(e2e['accepted_events_per_s'])} | {_f(e2e['stored_during_load_events_per_s'])} | {_f(e2e['sustained_events_per_s'])} | "
            f"{_f(h['events_per_s'])} | {_f(h['row_p50_ms'])} / {_f(h['row_p99_ms'])} | "
            f"{_f(None if h['committed_within_250ms'] is None else 100 * h['committed_within_250ms'], 1)} % | "
            f"{_f(e2e['receiver_cpu_s_per_m_events'], 1)} | {_f(e2e['consumer_cpu_s_per_m_events_during_load'], 1)} |",
        ]
    lines += ["", "### Targets", "", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for t in results.get("targets", []):
        v = t["measured"]
        digits = 2 if isinstance(v, float) and v < 10 else 0
        lines.append(f"| {t['target']} | {_f(v, digits)} | {t['goal']} | {_f(t['met'])} |")
    client = results.get("client_check")
    if client:
        lines += ["", "### Load client check", "", client]
    return "\n".join(lines) + "\n"


def charts(results: dict[str, Any], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    rec = results.get("receiver", {})
    if not rec:
        return made
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, data in rec.items():
        events = data["max"]["rps"] and data["events_per_s"] / data["max"]["rps"]
        pts = sorted(data["curve"], key=lambda p: p["fraction"])
        offered = [(p["offered_rps"] or p["rps"]) * events for p in pts]
        achieved = [p["rps"] * events for p in pts]
        ax.plot(offered, achieved, marker="o", label=name)
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":", label="achieved = offered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, events/s (last point: closed loop)")
    ax.set_ylabel("accepted (2xx, durable) events/s")
    ax.set_title("Receiver throughput vs offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = stem.with_name(stem.name + "-throughput.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, data) in enumerate(rec.items()):
        pts = sorted(data["curve"], key=lambda p: p["fraction"])
        x = [p["fraction"] * 100 for p in pts]
        c = colors[i % len(colors)]
        ax.plot(x, [p["p99_ms"] for p in pts], marker="o", color=c, label=f"{name} p99")
        ax.plot(x, [p["p50_ms"] for p in pts], marker=".", ls="--", color=c, label=f"{name} p50")
    ax.set_yscale("log")
    ax.set_xlabel("load, % of the closed-loop maximum (100: closed loop)")
    ax.set_ylabel("request latency, ms")
    ax.set_title("Receiver latency percentiles vs load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    path = stem.with_name(stem.name + "-latency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)

    r = {k: v for k, v in results.get("ratios", {}).items() if v is not None}
    if r:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(r) + 1.5))
        names = list(r)
        ax.barh(names, [r[n] for n in names], color="tab:blue")
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("figure ÷ its limit, measured in the same run")
        ax.set_title("How close eventpipe comes to the machine's limits")
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()
        path = stem.with_name(stem.name + "-ratios.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def main() -> None:
    """Re-render a run's Markdown table (and budget) from its JSON, after the report changed:
    `python -m bench.report bench/results/<run>.json`."""
    import json
    import sys

    path = Path(sys.argv[1])
    results = json.loads(path.read_text())
    results["single_event_budget"] = single_event_budget(results)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
