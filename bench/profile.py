"""Sampling profiles of the processes under load with py-spy (attached by pid, subprocesses included),
summarised as the functions that hold the most samples: where the CPU time goes."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path


def _exe() -> str | None:
    # Installed into the same environment as the bench, which need not be on PATH.
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def available() -> bool:
    return _exe() is not None


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record in the background; collapsed stacks to `out`. None when py-spy is missing."""
    exe = _exe()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--duration", str(max(1, round(seconds))),
           "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(collapsed: Path, top: int = 25) -> str:
    """Self and inclusive shares of the busiest functions (idle event-loop waits excluded)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames or "select (selectors.py" in frames[-1] or "run_forever" in frames[-1]:
            continue
        total += count
        names = [_short(f) for f in frames]
        own[names[-1]] += count
        for name in set(names):
            incl[name] += count
    if total == 0:
        return "(no samples)"
    lines = [f"{total} busy samples", "", "self%  function", "-----  --------"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "incl%  function", "-----  --------"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in incl.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name
