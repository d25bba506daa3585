"""Showing a status snapshot: an aligned table for people, JSON for machines. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from consumers.status.snapshot import Snapshot

_MS_PER_HOUR = 3_600_000


def to_json(snapshot: Snapshot) -> str:
    document: dict[str, Any] = {"healthy": snapshot.healthy, **msgspec.to_builtins(snapshot)}
    return msgspec.json.format(msgspec.json.encode(document), indent=2).decode()


def to_text(snapshot: Snapshot) -> str:
    s = snapshot
    lines = [f"eventpipe status at {s.taken_at:%Y-%m-%d %H:%M:%S %Z}", ""]
    b = s.broker
    if b.reachable and b.cluster is not None:
        c = b.cluster
        brokers = ",".join(map(str, c.broker_ids))
        lines.append(
            f"broker  {b.bootstrap}  reachable  cluster {c.cluster_id}  "
            f"brokers {brokers}  controller {c.controller_id}"
        )
    else:
        lines.append(f"broker  {b.bootstrap}  UNREACHABLE: {b.error}")

    if s.topics:
        lines.append("")
        rows = [
            [t.name, t.role, len(t.partitions), _retention(t.retention_ms), t.records, t.high_watermark]
            if t.exists
            else [t.name, t.role, "missing", "", "", ""]
            for t in s.topics
        ]
        lines += table(["topic", "role", "partitions", "retention", "records", "high watermark"], rows)

    if s.group is not None:
        lines += ["", *_group(s)]

    lines.append("")
    sink = s.sink
    if sink.reachable:
        lines.append(f"sink    {sink.url}  rows {sink.rows}")
    else:
        lines.append(f"sink    {sink.url}  UNREACHABLE: {sink.error}")

    d = s.dead_letters
    if d is not None:
        if d.error is not None:
            lines.append(f"dead letters in the last hour: unknown ({d.error})")
        else:
            reasons = ", ".join(f"{reason or '(none)'} {n}" for reason, n in sorted(d.by_reason.items()))
            partial = "" if d.reasons_complete else "; reasons of the first records read only"
            detail = f" ({reasons}{partial})" if reasons else ""
            lines.append(f"dead letters in the last hour: {d.count}{detail}")
    return "\n".join(lines)


def _group(s: Snapshot) -> list[str]:
    g = s.group
    assert g is not None
    if g.error is not None:
        return [f"group {g.group_id}: unknown ({g.error})"]
    lines = []
    members = g.description.members if g.description else []
    state = g.description.state if g.description else "?"
    if state == "Dead":
        lines.append(f"group {g.group_id}: no such group yet (nothing ever joined or committed)")
    else:
        lines.append(f"group {g.group_id}: {state}, {len(members)} member{'s' * (len(members) != 1)}")
    if members:
        rows = [[m.member_id, m.client_id, m.host, _assigned(m.assigned, g.topic)] for m in members]
        lines += table(["member", "client", "host", "partitions"], rows)
    if g.lag:
        lines += ["", f"lag on {g.topic}: {g.total_lag} records"]
        lag_rows: list[list[object]] = [
            [p.partition, p.high_watermark, "-" if p.committed is None else p.committed, p.lag] for p in g.lag
        ]
        lines += table(["partition", "high watermark", "committed", "lag"], lag_rows)
    return lines


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell; numbers right-aligned."""
    body = [list(r) for r in rows]
    cells = [list(header), *([str(c) for c in r] for r in body)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], int) or r[i] in ("", "-") for r in body) for i in range(len(header))]
    out = []
    for r in cells:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)]
        out.append("  ".join(padded).rstrip())
    return out


def _retention(ms: int | None) -> str:
    if ms is None:
        return "?"
    if ms < 0:
        return "forever"
    if ms % (24 * _MS_PER_HOUR) == 0:
        return f"{ms // (24 * _MS_PER_HOUR)} d"
    if ms % _MS_PER_HOUR == 0:
        return f"{ms // _MS_PER_HOUR} h"
    return f"{ms / _MS_PER_HOUR:.2f} h"


def _assigned(assigned: dict[str, list[int]], raw_topic: str) -> str:
    """`0-3,7` for the raw topic; other topics are named."""
    parts = []
    for topic, partitions in sorted(assigned.items()):
        spans = _spans(partitions)
        parts.append(spans if topic == raw_topic else f"{topic}:{spans}")
    return " ".join(parts) or "-"


def _spans(numbers: Sequence[int]) -> str:
    spans: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            spans.append(_span(run))
        run = [n]
    if run:
        spans.append(_span(run))
    return ",".join(spans)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
