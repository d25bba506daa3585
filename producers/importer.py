"""`eventpipe import FILE --source S --tenant T`: each line a vendor request body, judged by the
vendor's own validation and written onto the raw topic with the receiver's record headers through
the receiver's producer, as if it had come over HTTP. Refused lines go to the reject file.

Exit status: 0 every line sent; 1 some lines refused (every other line sent); 2 bad options or an
unknown tenant; 3 Kafka did not take the records (the summary names the first line not sent)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TextIO

import uvloop
from prometheus_client import CollectorRegistry

from pipeline import tenants as tenants_mod
from pipeline.clock import Clock, SystemClock, to_epoch_ms
from pipeline.errors import ConfigError
from pipeline.formats import all_formats
from pipeline.formats.base import Rejection, VendorFormat
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from producers.import_lines import ImportTally, Line, judge, read_lines, reject_record
from producers.progress import ProgressDisplay
from producers.receiver.kafka import KafkaUnavailable, RecordProducer

EXIT_REFUSED = 1
EXIT_UNSENT = 3
IN_FLIGHT = 256
KAFKA_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.2
# Where the source has a single route, the import needs no --route.
DEFAULT_ROUTES = {"topsort": "events", "dfinery": "events", "impression": "impression"}


def resolve_route(fmt: VendorFormat, route: str | None) -> str:
    """The route name for --route given as a name (`view`) or a path (`/1.0/view`)."""
    names = {r.name: r.name for r in fmt.routes} | {r.path: r.name for r in fmt.routes}
    wanted = route or DEFAULT_ROUTES.get(fmt.source)
    if wanted is None or wanted not in names:
        choices = ", ".join(sorted({r.name for r in fmt.routes}))
        raise ConfigError(f"--route for {fmt.source} is one of: {choices}")
    return names[wanted]


class KafkaGaveOut(Exception):
    """The producer stayed unable to write for longer than the retry budget."""


class Importer:
    """Validates and sends lines; the producer is opened by `start` and closed by `stop`."""

    def __init__(
        self,
        settings: Settings,
        fmt: VendorFormat,
        route: str,
        tenant: str,
        *,
        kafka_wait_seconds: float = KAFKA_WAIT_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._fmt = fmt
        self._route = route
        self._tenant = tenant
        self._clock = clock or SystemClock()
        self._kafka_wait = kafka_wait_seconds
        # Not in transactions, whatever the receiver does: an import's outcome is per line, and a line
        # refused is reported, not retried, so it cannot become a stored refusal.
        self._producer = RecordProducer(
            dataclasses.replace(settings, kafka_transactional_id=""), Metrics(CollectorRegistry())
        )
        self._run = uuid.uuid4().hex[:8]
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self.tally = ImportTally()

    async def start(self) -> None:
        await self._producer.start()
        await self._until_ready(self._kafka_wait)

    async def stop(self) -> None:
        await self._producer.stop()

    async def _until_ready(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._producer.ready:
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaGaveOut(f"no connection to Kafka at {self._settings.kafka_bootstrap}")
            await asyncio.sleep(POLL_SECONDS)

    async def submit(self, line: Line, rejects: IO[str] | None) -> None:
        """Judge one line; send it if accepted (in the background, at most IN_FLIGHT at once)."""
        tally = self.tally
        tally.lines += 1
        if line.blank:
            tally.blank += 1
            return
        now = self._clock.now()
        s = self._settings
        verdict = judge(self._fmt, self._route, line, s.max_body_bytes, now, s.future_skew_seconds)
        if isinstance(verdict, Rejection):
            reply = self._fmt.error(verdict)
            tally.refused[reply.status] += 1
            if rejects is not None:
                rejects.write(json.dumps(reject_record(line, reply), ensure_ascii=False) + "\n")
            return
        assert line.body is not None  # judged, so kept
        meta = RecordMeta(
            source=self._fmt.source,
            route=self._route,
            tenant=self._tenant,
            received_at_ms=to_epoch_ms(now),
            request_id=f"import-{self._run}-{line.number}",
        )
        await self._slots.acquire()
        task = asyncio.create_task(self._send(line, line.body, meta, verdict.events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, line: Line, body: bytes, meta: RecordMeta, events: int) -> None:
        try:
            deadline = asyncio.get_running_loop().time() + self._kafka_wait
            while True:
                try:
                    await self._producer.send(body, meta)
                    break
                except KafkaUnavailable:
                    # The producer reconnects by itself; wait for it within the retry budget.
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        raise KafkaGaveOut(f"line {line.number} not acknowledged by Kafka") from None
                    await self._until_ready(remaining)
            self.tally.sent_lines += 1
            self.tally.sent_events += events
        except KafkaGaveOut:
            first = self.tally.unsent_from
            self.tally.unsent_from = line.number if first is None else min(first, line.number)
        finally:
            self._slots.release()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)


def _status(tally: ImportTally) -> str:
    return f"lines {tally.lines} · sent {tally.sent_lines} · refused {tally.refused_lines}"


async def import_file(
    importer: Importer,
    stream: IO[bytes],
    limit: int,
    rejects: IO[str] | None,
    *,
    from_line: int = 1,
    progress: ProgressDisplay | None = None,
) -> ImportTally:
    tally = importer.tally
    try:
        await importer.start()
        for line in read_lines(stream, limit):
            if line.number < from_line:
                continue
            if tally.unsent_from is not None:
                # Kafka gave out: send nothing more, so the lines from unsent_from on are the ones to re-run.
                tally.unsent_from = min(tally.unsent_from, line.number)
                break
            await importer.submit(line, rejects)
            if progress is not None:
                progress.update(stream.tell(), _status(tally))
        await importer.drain()
        if progress is not None:
            progress.update(stream.tell(), _status(tally))
    except KafkaGaveOut:
        tally.unsent_from = from_line if tally.unsent_from is None else tally.unsent_from
    finally:
        await importer.stop()
    return tally


@contextlib.contextmanager
def _maybe_open(path: str | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
        return
    with open(path, "w", encoding="utf-8") as stream:
        yield stream


def main(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    fmt = all_formats()[args.source]
    route = resolve_route(fmt, args.route)
    if not settings.tenants:
        raise ConfigError("set EVENTPIPE_TENANTS to the tenants file: the tenant must be one of it")
    if tenants_mod.load(settings.tenants, environ).by_id(args.tenant) is None:
        raise ConfigError(f"tenant {args.tenant!r} is not in the tenants file {settings.tenants}")
    path = Path(args.file)
    try:
        size = path.stat().st_size
        stream = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    importer = Importer(settings, fmt, route, args.tenant, kafka_wait_seconds=args.kafka_wait)
    with stream, _maybe_open(args.rejects) as rejects, ProgressDisplay("import", size) as progress:
        tally = uvloop.run(
            import_file(
                importer,
                stream,
                settings.max_body_bytes,
                rejects,
                from_line=args.from_line,
                progress=progress,
            )
        )
    print(tally.render(str(path), settings.raw_topic, args.rejects))
    if tally.unsent_from is not None:
        return EXIT_UNSENT
    if tally.refused_lines:
        if args.rejects is None:
            print("refused lines were not kept: pass --rejects FILE to write them", file=sys.stderr)
        return EXIT_REFUSED
    return 0
