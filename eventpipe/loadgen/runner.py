"""Sending the plan: open-loop pacing (request i leaves at start + i/rate whatever the server does),
at most `connections` requests on the wire, a bounded backlog behind them, each reply counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import aiohttp
import msgspec

from eventpipe.loadgen.tally import Tally
from eventpipe.loadgen.traffic import PlannedRequest, TrafficPlan
from pipeline.errors import ConfigError

PROGRESS_SECONDS = 0.5
USER_AGENT = "eventpipe-loadgen"


@dataclass(frozen=True)
class Credentials:
    api_key: str | None = None  # Topsort and DFINERY bearer key, Retail Rocket apiKey
    partner_id: str | None = None  # Retail Rocket partnerId
    jwt: str | None = None  # Impression API token

    def check(self, sources: tuple[str, ...] | list[str]) -> None:
        needs_key = [s for s in sources if s in ("topsort", "retailrocket", "dfinery")]
        if needs_key and not self.api_key:
            raise ConfigError(f"{', '.join(needs_key)} need an API key (--api-key or --credentials)")
        if "retailrocket" in sources and not self.partner_id:
            raise ConfigError("retailrocket needs a partner id (--partner-id)")
        if "impression" in sources and not self.jwt:
            raise ConfigError(
                "impression needs a JWT (--jwt, --jwt-secret-env or jwt_secret in --credentials)"
            )


@dataclass(frozen=True)
class LoadOptions:
    url: str
    rate: float
    duration_s: float
    credentials: Credentials
    connections: int = 32
    timeout_s: float = 10.0

    @property
    def total(self) -> int:
        return max(1, round(self.rate * self.duration_s))


class _Auth:
    """Each vendor's way of presenting the credentials."""

    def __init__(self, credentials: Credentials) -> None:
        json = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        key, jwt = credentials.api_key or "", credentials.jwt or ""
        self.headers: Mapping[str, Mapping[str, str]] = {
            "topsort": {**json, "Authorization": f"Bearer {key}"},
            "dfinery": {**json, "Authorization": f"Bearer {key}"},
            "retailrocket": json,
            "impression": {**json, "Authorization": f"Bearer {jwt}"},
        }
        partner = credentials.partner_id or ""
        self.params: Mapping[str, Mapping[str, str]] = {"retailrocket": {"apiKey": key, "partnerId": partner}}


class Ledger:
    """Every event of every 2xx request, one JSON line each: source, event_type, event_id, kind."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._encode = msgspec.json.Encoder().encode

    def write(self, request: PlannedRequest) -> None:
        for event in request.events:
            line = {
                "source": request.source,
                "event_type": event.event_type,
                "event_id": event.event_id,
                "kind": event.kind.value,
            }
            self._stream.write(self._encode(line) + b"\n")


def status_text(tally: Tally, total: int, rate: float) -> str:
    classes = {"2xx": 0, "4xx": 0, "5xx": 0}
    for label, n in tally.statuses.items():
        key = f"{label[0]}xx"
        if key in classes:
            classes[key] += n
    answered = sum(tally.requests.values())
    counts = " · ".join(f"{k} {v}" for k, v in classes.items())
    return (
        f"{answered}/{total} · {rate:.0f} req/s · {counts} · no reply {tally.no_reply} · "
        f"not as planned {tally.not_as_planned} · rate limited {tally.rate_limited}"
    )


async def run(
    options: LoadOptions,
    plan: TrafficPlan,
    *,
    tally: Tally,
    ledger: Ledger | None = None,
    on_progress: Callable[[Tally, str], None] | None = None,
) -> None:
    """Send the plan's requests for the duration, counting each reply in `tally` (the caller's, so
    that what was counted survives an interruption)."""
    auth = _Auth(options.credentials)
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(options.connections)
    # About a second of backlog: beyond it the client itself is the bottleneck, and piling up more
    # would only measure its own queue.
    max_outstanding = max(4 * options.connections, int(options.rate))
    outstanding = 0
    base = options.url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    connector = aiohttp.TCPConnector(limit=options.connections)

    async def send(session: aiohttp.ClientSession, request: PlannedRequest, scheduled: float) -> None:
        nonlocal outstanding
        try:
            async with slots:
                began = loop.time()
                status: int | None = None
                error: str | None = None
                body = b""
                try:
                    async with session.post(
                        base + request.path,
                        data=request.body,
                        headers=auth.headers[request.source],
                        params=auth.params.get(request.source),
                    ) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = type(exc).__name__
                latency = loop.time() - began
            accepted = tally.record(
                request, status, latency=latency, delay=began - scheduled, error=error, body=body
            )
            if accepted and ledger is not None:
                ledger.write(request)
        finally:
            outstanding -= 1

    async def report() -> None:
        last_count, last_time = 0, loop.time()
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            now = loop.time()
            count = sum(tally.requests.values())
            rate = (count - last_count) / (now - last_time) if now > last_time else 0.0
            last_count, last_time = count, now
            if on_progress is not None:
                on_progress(tally, status_text(tally, options.total, rate))

    started = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    reporter = asyncio.create_task(report())
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = loop.time()
            for i in range(options.total):
                scheduled = start + i / options.rate
                wait = scheduled - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if outstanding >= max_outstanding:
                    tally.skipped += 1
                    continue
                outstanding += 1
                task = asyncio.create_task(send(session, plan.next(datetime.now(UTC)), scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
    finally:
        # Only on an error or Ctrl-C are requests left: they are abandoned, not counted.
        for task in (*tasks, reporter):
            task.cancel()
        await asyncio.gather(*tasks, reporter, return_exceptions=True)
    if on_progress is not None:
        average = sum(tally.requests.values()) / max(loop.time() - started, 1e-9)
        on_progress(tally, status_text(tally, options.total, average))
