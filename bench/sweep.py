"""One setting at several values, everything else equal: runs `python -m bench` once per value (same
parts, same options) and prints the figures that setting trades against each other, one row per
value. How the defaults of the batching settings were chosen.

    .venv/bin/python -m bench.sweep batch_max_wait_ms 100,50,25,10 --only e2e
    .venv/bin/python -m bench.sweep producer_linger_ms 0,5,20 --only receiver --scenarios topsort-single,topsort-batch

Extra options after the values go to `python -m bench` as they are (`--quick` is the default; pass
`--full` for 10 s points). Each run's own results stay in bench/results/ as usual; the table is
printed and written beside them as `<first run>-sweep-<setting>.md`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import _f
from bench.run import RESULTS


def _row(setting: str, value: str, results: dict[str, Any]) -> list[str]:
    cells = [f"{setting}={value}"]
    for name, fig in results.get("receiver", {}).items():
        half = next((p for p in fig["curve"] if round(p["fraction"], 2) == 0.5), {})
        cells.append(
            f"{name}: {_f(fig['events_per_s'])} ev/s, p99 at 50% {_f(half.get('p99_ms'), 1)} ms, "
            f"{_f(fig['receiver_cpu_s_per_m_events'], 1)} CPU-s/M"
        )
    for key, fig in results.get("consumers", {}).items():
        cells.append(
            f"{key}: {_f(fig.get('events_per_s'))} ev/s, {_f(fig.get('cpu_s_per_m_events'), 1)} CPU-s/M"
        )
    e2e = results.get("e2e")
    if e2e:
        h = e2e["half_load"]
        cells.append(
            f"e2e: sustained {_f(e2e['sustained_events_per_s'])} ev/s; at 50% row p50/p99 "
            f"{_f(h['row_p50_ms'])}/{_f(h['row_p99_ms'])} ms; consumers "
            f"{_f(e2e['consumer_cpu_s_per_m_events_during_load'], 1)} CPU-s/M"
        )
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("setting", help="a pipeline setting, as for `python -m bench --set`")
    parser.add_argument("values", help="comma-separated values")
    parser.add_argument("--full", action="store_true", help="full-length points instead of --quick")
    args, passed = parser.parse_known_args()
    rows: list[list[str]] = []
    stems: list[str] = []
    for value in args.values.split(","):
        with tempfile.TemporaryDirectory(prefix="eventpipe-sweep-") as out:
            cmd = [sys.executable, "-m", "bench", "--out", out, "--set", f"{args.setting}={value}", *passed]
            if not args.full:
                cmd.append("--quick")
            print(f"== {args.setting}={value}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True)
            (result,) = Path(out).glob("*.json")
            stems.append(result.stem)
            for produced in Path(out).iterdir():
                produced.replace(RESULTS / produced.name)
            rows.append(_row(args.setting, value, json.loads((RESULTS / result.name).read_text())))
    width = max(map(len, rows))
    table = [f"| {args.setting} | " + " | ".join(["figures"] * (width - 1)) + " |", "|" + " --- |" * width]
    table += ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
    text = f"Sweep of `{args.setting}` (runs {', '.join(stems)}):\n\n" + "\n".join(table) + "\n"
    (RESULTS / f"{stems[0]}-sweep-{args.setting}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
