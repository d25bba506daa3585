"""Free loopback ports for the processes a test starts (never fixed ones: tests run side by side)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_run(n: int) -> int:
    """A free port p with p+1..p+n free too (a broker's listener and controller, consumers' ports)."""
    for _ in range(100):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            for i in range(1, n + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise AssertionError(f"no run of {n + 1} free ports")


def free_node_ports(nodes: int, stride: int = 100) -> int:
    """A free base port p such that p + stride * i and the port above it are free for every node i
    (a local cluster's client and controller listeners)."""
    for _ in range(100):
        base = free_port()
        if base + stride * (nodes - 1) + 1 > 65535:
            continue
        try:
            for i in range(nodes):
                for port in (base + stride * i, base + stride * i + 1):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no free ports for {nodes} nodes")
