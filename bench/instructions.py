"""Instructions per request, counted by valgrind's callgrind: the receiver (one worker, with the
multiprocess metrics of `--workers N`) and the no-op server under the same closed-loop load. Counts
do not depend on what else the machine is doing, so a before/after of the receiver's Python CPU per
request repeats on a busy box where CPU seconds do not.

    python -m bench.instructions --kafka 127.0.0.1:19092 [--scenarios topsort-single,...] [--seconds 20]

Instrumentation is switched on after a warm-up and the counters dumped after the load, so start-up
is not counted; what is counted besides the requests is the idle loop (timers, the readiness probe),
a few per cent at most. `--annotate N` prints the N functions with the most inclusive instructions."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench import procs, wrk
from bench.payloads import Scenario, by_name, scenarios
from bench.services import free_port

# "totals:" is right in every dump; "summary:" wraps around after the first one.
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


def _callgrind(args: list[str], out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *args]


@contextlib.contextmanager
def _traced(args: list[str], env: dict[str, str], out: Path, ready: str) -> Iterator[int]:
    log = out.with_suffix(".log")
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            _callgrind(args, out), env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_answering(ready, proc)
        yield proc.pid
    finally:
        procs.stop([proc], seconds=60)


def _wait_answering(url: str, proc: subprocess.Popen[bytes], seconds: float = 300) -> None:
    """Until the server answers anything at all (the no-op server has no GET route)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - loopback URL we built
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not answering within {seconds:.0f}s")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _count(
    pid: int, url: str, scenario: Scenario, seconds: float, connections: int, out: Path
) -> dict[str, float]:
    wrk.run(url, scenario, 5, connections=connections, timeout_s=30)  # warm-up, not counted
    _control("--instr=on", str(pid))
    res = wrk.run(url, scenario, seconds, connections=connections, timeout_s=30)
    _control("--dump", str(pid))
    _control("--instr=off", str(pid))
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    dumps = [d for d in dumps if d.suffix != ".log"]
    text = dumps[-1].read_text(errors="replace")
    match = _TOTALS.search(text)
    total = int(match.group(1)) if match else 0
    target = out.parent / f"{out.name}.{scenario.name}"
    dumps[-1].rename(target)
    return {
        "requests": res.ok,
        "errors": res.errors,
        "instructions": total,
        "per_request": total / max(res.ok, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--kafka", required=True, help="a running broker")
    p.add_argument(
        "--scenarios", default="topsort-single,retailrocket-single,dfinery-single,impression-single"
    )
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--out", type=Path, help="keep the callgrind files here (default: a temp dir)")
    p.add_argument("--annotate", type=int, default=0, help="print the top N inclusive functions per dump")
    p.add_argument("--only", default="noop,receiver")
    p.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE")
    a = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("error: needs valgrind (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    workdir = a.out or Path(tempfile.mkdtemp(prefix="eventpipe-callgrind-"))
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = [by_name(scenarios())[n] for n in a.scenarios.split(",")]
    parts = set(a.only.split(","))
    _, env = procs.receiver_topics_env(
        a.kafka, workdir, "bench.cg", **dict(item.split("=", 1) for item in a.set)
    )
    mp_dir = tempfile.mkdtemp(prefix="eventpipe-cg-metrics-")
    # The multiprocess value store of `--workers N` (mmap writes per metric update), in one process.
    env["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    results: dict[str, dict[str, dict[str, float]]] = {}
    if "noop" in parts:
        port = free_port()
        out = workdir / "noop.cg"
        args = [sys.executable, "-m", "bench.noop_server", "--port", str(port), "--workers", "1"]
        url = f"http://127.0.0.1:{port}"
        with _traced(args, dict(os.environ), out, url + "/") as pid:
            results["noop"] = {s.name: _count(pid, url, s, a.seconds, a.connections, out) for s in chosen}
    if "receiver" in parts:
        port = free_port()
        out = workdir / "receiver.cg"
        args = [sys.executable, "-m", "eventpipe", "receiver", "--workers", "1", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        with _traced(args, env, out, url + "/readyz") as pid:
            time.sleep(1)
            results["receiver"] = {s.name: _count(pid, url, s, a.seconds, a.connections, out) for s in chosen}
    shutil.rmtree(mp_dir, ignore_errors=True)
    print(f"{'request':22} {'no-op Ir/req':>14} {'receiver Ir/req':>16} {'ratio':>6}  (files in {workdir})")
    for s in chosen:
        noop = results.get("noop", {}).get(s.name, {}).get("per_request", 0.0)
        rec = results.get("receiver", {}).get(s.name, {}).get("per_request", 0.0)
        ratio = f"{rec / noop:6.2f}" if noop and rec else "     -"
        print(f"{s.name:22} {noop:14,.0f} {rec:16,.0f} {ratio}")
    if a.annotate:
        for f in sorted(workdir.glob("*.cg.*")):
            print(f"\n== {f.name}")
            ann = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(f)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            lines = [ln for ln in ann.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
            print("\n".join(lines[: a.annotate]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
