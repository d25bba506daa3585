"""Driving Debian's `wrk` (LuaJIT scripts, C event loop: far cheaper per request than a Python client)
with one script (lua/load.lua) for fixed bodies, per-request unique ids, and paced (fixed-rate) load.
The client's own CPU time comes from the kernel (wait4), so a saturated client shows in the results."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Scenario

# Each run tags its ids with its own number, so that no two runs of one bench send the same event.
_RUN_IDS = itertools.count(secrets.randbelow(4096))
SCRIPT = Path(__file__).with_name("lua") / "load.lua"
INSTALL_HINT = "the load client is Debian's wrk: apt-get install -y wrk"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    ok: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    offered_rps: float | None

    @property
    def client_cpu_share(self) -> float:
        """Client CPU as a share of one core over the run."""
        return self.client_cpu_s / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p90_ms": round(self.p90_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "offered_rps": None if self.offered_rps is None else round(self.offered_rps, 1),
        }


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(
    scenario: Scenario, body_file: Path, out_file: Path, rate: float, threads: int, unique: bool
) -> str:
    headers = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in scenario.headers.items()
    )
    params = {
        "@BODY_FILE@": str(body_file),
        "@OUT_FILE@": str(out_file),
        "@PATH@": scenario.path,
        "@RATE@": repr(float(rate)),
        "@THREADS@": str(threads),
        "@UNIQUE@": "true" if unique else "false",
        "@HEADERS@": headers,
        "@RUN_ID@": str(next(_RUN_IDS) % 4096),
        "@METHOD@": scenario.method,
    }
    text = SCRIPT.read_text()
    for key, value in params.items():
        text = text.replace(key, value)
    return text


def run(
    base_url: str,
    scenario: Scenario,
    seconds: float,
    *,
    connections: int = 64,
    threads: int = 2,
    rate: float = 0.0,
    unique: bool = False,
    timeout_s: float = 10.0,
) -> LoadResult:
    """One wrk run: closed loop (rate 0) or paced at `rate` requests/s in total."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="eventpipe-wrk-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(scenario.body() if not unique else scenario.template.encode())
        out_file = Path(tmp) / "out.json"
        script = Path(tmp) / "load.lua"
        script.write_text(_script(scenario, body_file, out_file, rate, threads, unique))
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{max(connections, threads)}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s:g}s",
            "-s",
            str(script),
            base_url,
        ]
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = proc.stdout.read().decode() if proc.stdout else ""
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0 or not out_file.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
        data = json.loads(out_file.read_text())
        wall = time.monotonic() - began
    duration = data["duration_us"] / 1e6 or wall
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    ok = data["requests"] - data["status_errors"]
    return LoadResult(
        requests=data["requests"],
        ok=ok,
        errors=errors + data["status_errors"],
        seconds=duration,
        rps=ok / duration,
        p50_ms=data["lat_p50_us"] / 1000,
        p90_ms=data["lat_p90_us"] / 1000,
        p99_ms=data["lat_p99_us"] / 1000,
        max_ms=data["lat_max_us"] / 1000,
        client_cpu_s=usage.ru_utime + usage.ru_stime,
        offered_rps=rate or None,
    )
