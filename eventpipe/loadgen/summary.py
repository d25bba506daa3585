"""The run's summary: what was sent, what the receiver answered, and the figures an operator checks
against the dashboards (the increase of each eventpipe_* series over the run). As a dict for
`--json`, and as text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from eventpipe.loadgen.tally import OUTCOMES, Tally
from eventpipe.loadgen.traffic import Kind


@dataclass(frozen=True)
class RunInfo:
    url: str
    tenant: str
    seed: int
    rate: float
    duration_s: float
    batch: int
    connections: int
    sources: Sequence[str]
    shares: dict[str, float]
    started_at: str
    elapsed_s: float


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def build(tally: Tally, run: RunInfo) -> dict[str, Any]:
    sources = list(run.sources)
    requests = sum(tally.requests.values())
    expected = {s: {o: tally.expected[s][o] if s in tally.expected else 0 for o in OUTCOMES} for s in sources}
    return {
        "run": {
            **asdict(run),
            "sources": sources,
            "requests_per_second": round(requests / run.elapsed_s, 1) if run.elapsed_s else 0.0,
        },
        "sent": {
            "requests": {s: tally.requests[s] for s in sources},
            "events": {s: tally.events[s] for s in sources},
            "events_by_kind": {k.value: tally.kinds[k.value] for k in Kind},
            "skipped_ticks": tally.skipped,
        },
        "replies": {
            "by_status": dict(sorted(tally.statuses.items())),
            "by_source": {s: dict(sorted(tally.statuses_by_source.get(s, {}).items())) for s in sources},
            "latency_ms": {
                "p50": _ms(tally.latency.quantile(0.5)),
                "p99": _ms(tally.latency.quantile(0.99)),
                "max": _ms(tally.latency.max),
            },
            "behind_schedule_ms": {
                "p50": _ms(tally.delay.quantile(0.5)),
                "p99": _ms(tally.delay.quantile(0.99)),
            },
            "as_planned": tally.as_planned,
            "not_as_planned": tally.not_as_planned,
            "rate_limited": tally.rate_limited,
            "no_reply": tally.no_reply,
            "samples": [asdict(s) for s in tally.samples],
        },
        "expected": {
            "eventpipe_receiver_events_accepted_total": {s: tally.accepted_events[s] for s in sources},
            "eventpipe_consumer_events_total": expected,
            "eventpipe_dead_letters_total": {
                s: {r: expected[s][r] for r in ("late", "future")} for s in sources
            },
            "rows_added": sum(expected[s]["stored"] for s in sources),
            "uncertain_events": tally.uncertain_events,
        },
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        lines.append(f"{indent}{first}  {rest}".rstrip())
    return lines


def render(summary: dict[str, Any]) -> str:
    run, sent, replies, expected = summary["run"], summary["sent"], summary["replies"], summary["expected"]
    sources: list[str] = run["sources"]
    total_requests = sum(sent["requests"].values())
    lines = [
        f"eventpipe loadgen: {total_requests} requests in {run['elapsed_s']:.1f} s "
        f"({run['requests_per_second']}/s achieved, {run['rate']:g}/s asked) to {run['url']}, "
        f"tenant {run['tenant']}, seed {run['seed']}",
        "",
        "Sent",
    ]
    lines += _table(
        ["source", "requests", "events"],
        [[s, sent["requests"][s], sent["events"][s]] for s in sources]
        + [["total", total_requests, sum(sent["events"].values())]],
    )
    kinds = sent["events_by_kind"]
    lines.append("  events by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    if sent["skipped_ticks"]:
        lines.append(f"  not sent (every connection busy, backlog full): {sent['skipped_ticks']} requests")
    latency, behind = replies["latency_ms"], replies["behind_schedule_ms"]
    lines += [
        "",
        f"Receiver replies (latency p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
        f"sent behind schedule p99 {behind['p99']} ms)",
    ]
    statuses = sorted(replies["by_status"])
    lines += _table(
        ["status", *sources, "total"],
        [
            [st, *(replies["by_source"][s].get(st, 0) for s in sources), replies["by_status"][st]]
            for st in statuses
        ],
    )
    lines.append(
        f"  as planned {replies['as_planned']}, not as planned {replies['not_as_planned']}, "
        f"rate limited {replies['rate_limited']}"
    )
    if replies["rate_limited"]:
        lines.append(
            "    429s are the tenant's rate limit (Retail Rocket 50 requests/s per site by default; "
            "EVENTPIPE_RATE_LIMITS or the tenants file raise it): their events were not accepted"
        )
    for sample in replies["samples"]:
        lines.append(f"    e.g. {sample['source']} {sample['path']} -> {sample['status']} {sample['body']!r}")
    consumer = expected["eventpipe_consumer_events_total"]
    lines += [
        "",
        "Expected on the dashboards (increase over this run, if nothing else sends)",
        "  eventpipe_receiver_events_accepted_total{source}: "
        + ", ".join(f"{s} {n}" for s, n in expected["eventpipe_receiver_events_accepted_total"].items()),
        "  eventpipe_consumer_events_total{source,outcome}:",
    ]
    lines += _table(
        ["outcome", *sources, "total"],
        [
            [o, *(consumer[s][o] for s in sources), sum(consumer[s][o] for s in sources)]
            for o in consumer[sources[0]]
        ],
        indent="    ",
    )
    late = sum(consumer[s]["late"] for s in sources)
    future = sum(consumer[s]["future"] for s in sources)
    lines.append(f'  eventpipe_dead_letters_total{{reason="late"}} {late}, {{reason="future"}} {future}')
    lines.append(f"  rows added to the events table: {expected['rows_added']}")
    if expected["uncertain_events"]:
        lines.append(
            f"  uncertain: {expected['uncertain_events']} events got no reply (or an unplanned 2xx); "
            "they may or may not be counted"
        )
    return "\n".join(lines)
