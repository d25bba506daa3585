"""CPU accounting of processes from the kernel's own counters (user + system seconds), summed over a
process tree. Stable where wall-clock rates are noisy: a figure per million events does not depend on
what else the machine was doing."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes and all their live descendants."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
    return total


class CpuMeter:
    """CPU seconds used by a process tree between start() and stop()."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._began = 0.0
        self.seconds = 0.0

    def start(self) -> CpuMeter:
        self._began = tree_cpu_seconds(self.pids)
        return self

    def stop(self) -> float:
        self.seconds = tree_cpu_seconds(self.pids) - self._began
        return self.seconds


def per_million(cpu_seconds: float, events: float) -> float | None:
    return cpu_seconds / events * 1e6 if events > 0 else None
