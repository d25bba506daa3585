"""Overload: `eventpipe receiver --workers 2` driven at a multiple of its capacity (issue #14, part 4),
with large bodies (~620 KiB Topsort batches) and with small ones (one event per request), once with
admission off (both bounds 0: what main did) and once with the settings given (the defaults unless
--set). Per run: accepted and refused requests, the accepted requests' p99 (from the client), the peak
RSS of the receiver's process tree, and whether Kafka holds a record for every 2xx.

    python -m bench.overload [--kafka 127.0.0.1:19092] [--seconds 25] [--factor 3]

Capacity is measured first, per body, as the closed-loop maximum with admission off; both runs are then
paced at `factor` times it (wrk, many connections, a fixed schedule per connection)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import procs, profile, wrk
from bench.payloads import Scenario, by_name, scenarios
from bench.receiver_figures import records_in

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "overload"
SCRIPT = Path(__file__).with_name("lua") / "overload.lua"
LARGE_BYTES = 620 * 1024
OFF = {"max_in_flight_bytes": "0"}
MODES = {"before": "before (main)", "off": "bound off", "after": "after"}


def large_topsort(base: Scenario) -> Scenario:
    """The Topsort batch (50 of each event kind) grown to ~620 KiB by an extra field per event, which
    the receiver keeps like any unknown field: the bodies of the issue's report."""
    doc = json.loads(base.template)
    events = sum(len(v) for v in doc.values())
    size = len(base.template)
    pad = (LARGE_BYTES - size) // events - len(',"context":""')
    for items in doc.values():
        for event in items:
            event["context"] = "x" * pad
    template = json.dumps(doc, separators=(",", ":"))
    return Scenario("topsort-620k", base.vendor, base.path, base.headers, template, base.events, True)


@dataclass
class Peak:
    """The largest RSS of a process and its descendants, sampled every 50 ms on a thread."""

    pid: int
    peak: int = 0
    baseline: int = 0
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def tree_rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in members:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def start(self) -> Peak:
        self.baseline = self.peak = self.tree_rss()
        self._stop = threading.Event()

        def sample() -> None:
            assert self._stop is not None
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, self.tree_rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        assert self._stop is not None
        assert self._thread is not None
        self._stop.set()
        self._thread.join()
        return self.peak


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 - loopback URL we built
        return str(resp.read().decode())


def buckets(text: str, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets (upper bound: count), summed over labels and workers."""
    out: dict[float, float] = {}
    for match in re.finditer(rf"^{name}_bucket\{{([^}}]*)\}} (\S+)$", text, re.M):
        le = re.search(r'le="([^"]*)"', match.group(1))
        if le:
            bound = float(le.group(1))
            out[bound] = out.get(bound, 0.0) + float(match.group(2))
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile of what was observed between two scrapes."""
    diff = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = diff.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(diff):
        if diff[le] >= q * total:
            return le
    return None


def rejections(text: str) -> dict[str, float]:
    """eventpipe_receiver_rejections_total by reason, summed over sources and workers."""
    out: dict[str, float] = {}
    for match in re.finditer(r"^eventpipe_receiver_rejections_total\{([^}]*)\} (\S+)$", text, re.M):
        reason = re.search(r'reason="([^"]*)"', match.group(1))
        if reason:
            out[reason.group(1)] = out.get(reason.group(1), 0.0) + float(match.group(2))
    return out


def _p(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= rank:
            return float(ms)
    return float(max(hist))


def paced(url: str, scenario: Scenario, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk run at `rate` requests/s with the overload script: counts by status, 2xx latencies."""
    threads = 2
    with tempfile.TemporaryDirectory(prefix="eventpipe-overload-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(scenario.body())
        out_file = Path(tmp) / "out.json"
        headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in scenario.headers.items())
        text = SCRIPT.read_text()
        for key, value in {
            "@BODY_FILE@": str(body_file),
            "@OUT_FILE@": str(out_file),
            "@PATH@": scenario.path,
            "@RATE@": repr(float(rate)),
            "@THREADS@": str(threads),
            "@HEADERS@": headers,
        }.items():
            text = text.replace(key, value)
        script = Path(tmp) / "overload.lua"
        script.write_text(text)
        cmd = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--timeout=10s",
            "-s", str(script), url,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not out_file.exists():
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"wrk failed: {err}")
        data = json.loads(out_file.read_text())
    statuses = {int(k): v for k, v in data["statuses"].items()}
    hist = {int(k): v for k, v in data["ok_latency_ms"].items()}
    seconds_run = data["duration_us"] / 1e6
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    refused = statuses.get(503, 0)
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    return {
        "offered_rps": round(rate, 1),
        "sent_rps": round(data["requests"] / seconds_run, 1),
        "seconds": round(seconds_run, 1),
        "accepted": ok,
        "refused_503": refused,
        "other_status": {k: v for k, v in statuses.items() if not (200 <= k < 300 or k == 503)},
        "socket_errors": {
            "connect": data["connect_errors"],
            "read": data["read_errors"],
            "write": data["write_errors"],
            "timeout": data["timeouts"],
        },
        "errors": errors,
        "accepted_rps": round(ok / seconds_run, 1),
        "accepted_p50_ms": _p(hist, 0.50),
        "accepted_p99_ms": _p(hist, 0.99),
        "accepted_max_ms": float(max(hist)) if hist else None,
        "unmatched_2xx": data["unmatched"],
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


@contextmanager
def receiver(env: dict[str, str], logdir: Path, workers: int) -> Iterator[tuple[str, int]]:
    with procs.receiver(env, workers, logdir) as (url, proc):
        yield url, proc.pid


def run_mode(
    label: str,
    env: dict[str, str],
    bodies: list[tuple[Scenario, float]],
    args: argparse.Namespace,
    bootstrap: str,
    topic: str,
    logdir: Path,
) -> list[dict[str, Any]]:
    rows = []
    for scenario, capacity in bodies:
        # A fresh receiver per body: its peak RSS is this load's alone.
        with receiver(env, logdir, args.workers) as (url, pid):
            wrk.run(url, scenario, 3, connections=16)  # warm-up: connections, producer metadata
            before_records = records_in(bootstrap, topic)
            first = scrape(url)
            peak = Peak(pid).start()
            rate = capacity * args.factor
            spy = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                collapsed = args.profile / f"{label}-{scenario.name}.txt"
                spy = profile.start(pid, args.seconds - 2, collapsed)
            row = paced(url, scenario, rate, args.seconds, args.connections)
            rss = peak.stop()
            if spy is not None:
                spy.wait()
                (args.profile / f"{label}-{scenario.name}.top.txt").write_text(profile.summarise(collapsed))
            time.sleep(1.0)  # the last replies' records acknowledged, the last tick's metrics written
            records = records_in(bootstrap, topic) - before_records
            last = scrape(url)
        before_refusals, after_refusals = rejections(first), rejections(last)
        produce = "eventpipe_kafka_produce_duration_seconds"
        reasons = {
            k: int(after_refusals.get(k, 0) - before_refusals.get(k, 0))
            for k in after_refusals
            if after_refusals.get(k, 0) - before_refusals.get(k, 0)
        }
        row.update(
            {
                "mode": label,
                "body": scenario.name,
                "body_bytes": len(scenario.body()),
                "capacity_rps": round(capacity, 1),
                "refusals_by_reason": reasons,
                # Kafka's acknowledgement of the accepted requests' records, from the receiver's histogram
                # (bucket bounds: the p99 lies at or below this).
                "kafka_ack_p99_le_s": bucket_quantile(buckets(first, produce), buckets(last, produce), 0.99),
                "rss_baseline_mib": round(peak.baseline / 2**20, 1),
                # The machine's 1-minute load average at the end of the run (other work shares it).
                "load_1m": round(os.getloadavg()[0], 1),
                "rss_peak_mib": round(rss / 2**20, 1),
                "records_written": records,
                "nothing_lost": records >= row["accepted"],
            }
        )
        print(
            f"  {label:6} {scenario.name:15} offered {rate:7,.0f}/s: accepted {row['accepted']:,}, "
            f"refused {row['refused_503']:,} {reasons}, errors {row['errors']:,}, "
            f"p99 {row['accepted_p99_ms']} ms (Kafka ack p99 ≤ {row['kafka_ack_p99_le_s']} s), peak RSS {row['rss_peak_mib']} MiB, "
            f"records {records:,} ({'ok' if row['nothing_lost'] else 'LOST'})",
            flush=True,
        )
        rows.append(row)
    return rows


def capacity(env: dict[str, str], scenario: Scenario, workers: int, seconds: float, logdir: Path) -> float:
    """The closed-loop maximum (2xx/s) with admission off: enough connections to keep both workers busy."""
    connections = 32 if scenario.batched else 128
    with receiver(env, logdir, workers) as (url, _pid):
        wrk.run(url, scenario, 5, connections=connections)  # warm-up: the topic's segments, the broker's JIT
        top = wrk.run(url, scenario, seconds, connections=connections)
    print(f"  capacity {scenario.name}: {top.rps:,.0f} req/s (closed loop, {connections} connections, "
          f"p99 {top.p99_ms:,.0f} ms)", flush=True)  # fmt: skip
    return top.rps


def checkout(ref: str, workdir: Path) -> Path:
    """The tree of a git ref, exported (not checked out: the work tree stays as it is), for the 'before'
    receiver to run from (PYTHONPATH comes before the editable install)."""
    tree = workdir / f"src-{ref.replace('/', '_')}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    p.add_argument("--kafka", default="127.0.0.1:19092", help="bootstrap of a running broker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=25.0, help="length of each overload run")
    p.add_argument("--capacity-seconds", type=float, default=10.0)
    p.add_argument("--factor", type=float, default=3.0, help="offered load as a multiple of capacity")
    p.add_argument("--connections", type=int, default=800)
    p.add_argument("--bodies", default="large,small", help="large, small or both")
    p.add_argument(
        "--modes",
        default="before,after",
        help="before (the receiver of --before-ref), off (this code, bound 0), after (this code, settings)",
    )
    p.add_argument("--before-ref", default="main", help="git ref whose receiver is 'before'")
    p.add_argument("--set", action="append", default=[], help="setting=value for the 'after' receiver")
    p.add_argument(
        "--capacity", default="", help="body=req/s,... taken as measured (e.g. to repeat one setting)"
    )
    p.add_argument("--profile", type=Path, help="py-spy profiles of each run's receiver into this folder")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not wrk.available():
        raise SystemExit(wrk.INSTALL_HINT)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="eventpipe-overload-"))
    settings, base = procs.receiver_topics_env(args.kafka, workdir, "bench", data_dir=str(workdir))
    after_settings = dict(item.split("=", 1) for item in args.set)
    env_after = {**base, **{f"EVENTPIPE_{k.upper()}": v for k, v in after_settings.items()}}
    env_off = {**base, **{f"EVENTPIPE_{k.upper()}": v for k, v in OFF.items()}}
    # PYTHONSAFEPATH: the working directory (this tree) does not come before the exported one.
    env_before = {**base, "PYTHONPATH": str(checkout(args.before_ref, workdir)), "PYTHONSAFEPATH": "1"}
    named = by_name(scenarios())
    chosen = {
        "large": large_topsort(named["topsort-batch"]),
        "small": named["topsort-single"],
    }
    wanted = [chosen[b] for b in args.bodies.split(",")]
    print(
        f"overload bench: {args.workers} workers, Kafka {args.kafka}, topic {settings.raw_topic}", flush=True
    )
    given = {k: float(v) for k, v in (item.split("=") for item in args.capacity.split(",") if item)}
    names = {v.name: k for k, v in chosen.items()}
    bodies = [
        (s, given.get(names[s.name]) or capacity(env_off, s, args.workers, args.capacity_seconds, workdir))
        for s in wanted
    ]
    rows: list[dict[str, Any]] = []
    # Body by body, the receivers one after the other: on a shared machine, each pair sees the same load.
    for body in bodies:
        for mode in args.modes.split(","):
            env = {"before": env_before, "off": env_off, "after": env_after}[mode]
            rows += run_mode(mode, env, [body], args, args.kafka, settings.raw_topic, workdir)
    result = {
        "when": stamp,
        "workers": args.workers,
        "factor": args.factor,
        "connections": args.connections,
        "seconds": args.seconds,
        "after_settings": after_settings or "defaults",
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stamp}.md").write_text(table(result) + "\n")
    print(table(result))
    print(f"results: {path}")
    return 0 if all(r["nothing_lost"] for r in rows) else 1


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['workers']} workers, {result['factor']:g}x capacity, {result['connections']} connections, "
        f"{result['seconds']:g} s per run; after: {result['after_settings']}",
        "",
        "| body | receiver | offered req/s | accepted | refused (503) | errors | accepted p99 | Kafka ack p99 "
        "| peak RSS | records ≥ 2xx | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["refusals_by_reason"].items()))
        p99 = "—" if r["accepted_p99_ms"] is None else f"{r['accepted_p99_ms'] / 1000:.2f} s"
        lines.append(
            f"| {r['body']} | {MODES[r['mode']]} | {r['offered_rps']:,.0f} "
            f"(sent {r['sent_rps']:,.0f}) | {r['accepted']:,} | {r['refused_503']:,} ({reasons or '—'}) | "
            f"{r['errors']:,} | {p99} | ≤ {r['kafka_ack_p99_le_s']} s | {r['rss_peak_mib']:,.0f} MiB | "
            f"{'yes' if r['nothing_lost'] else 'NO'} ({r['records_written']:,}) | {r['load_1m']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
