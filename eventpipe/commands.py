"""The long-running and operating commands (receiver, consumer, dev, migrate, status, events, replay,
loadgen, import, tenants reload), registered on the CLI parser."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from eventpipe.loadgen.options import add_arguments as loadgen_arguments
from pipeline import logging as ep_logging
from pipeline import tenants as tenants_mod
from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _receiver(args: argparse.Namespace, settings: Settings) -> int:
    from producers.receiver.server import ServeOptions, run

    settings = settings.replace(
        http_host=args.host or settings.http_host, http_port=args.port or settings.http_port
    )
    ep_logging.configure(settings)
    directory = tenants_mod.load(settings.tenants, os.environ)
    options = ServeOptions(workers=args.workers, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return run(settings, directory, options, os.environ)


def _tenants(args: argparse.Namespace, settings: Settings) -> int:
    from producers.receiver import reload_command

    return reload_command.main(settings, args.port, args.timeout)


TENANTS_RELOAD_HELP = """\
make the receiver running on this machine re-read its tenants file (EVENTPIPE_TENANTS) without a
restart: it signals the receiver named by receiver-<port>.json in EVENTPIPE_DATA_DIR (SIGHUP, which
the parent forwards to every worker), waits for the verdict and for every worker to serve the new
file, and prints them. A file that does not parse, or whose rate limit table would change (tenants
or Retail Rocket partner ids with a limit added or removed, other limits), is refused: the receiver
keeps the keys it had, and the command exits 1 with the reason."""


def _consumer(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.run import run

    ep_logging.configure(settings)
    return run(settings, group_id=args.group)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from consumers.migrate import migrate

    print(asyncio.run(migrate(settings.sink)))
    return 0


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from eventpipe import dev

    ep_logging.configure(settings)
    return dev.run(settings, os.environ)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import logging

    from consumers.status import collect, render

    ep_logging.configure(settings)
    # The snapshot reports a broker it cannot reach; aiokafka's own connection errors would repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    snapshot = asyncio.run(collect.collect(settings, group_id=args.group))
    print(render.to_json(snapshot) if args.json else render.to_text(snapshot))
    return 0 if snapshot.healthy else 1


def _events(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.events.command import Options, main
    from consumers.sinks.reader import EventFilter

    where = EventFilter(tenant=args.tenant, source=args.source, event_type=args.type)
    options = Options(where, limit=args.limit, follow=args.follow, json=args.json, interval=args.interval)
    return main(settings.sink, options)


EVENTS_HELP = """\
the newest rows of the sink (EVENTPIPE_SINK, SQLite or PostgreSQL), oldest first as `tail` prints
them: stored_at and occurred_at (UTC), tenant, source, event_type, the user (or anonymous) id,
product, quantity, price and event_id. The table leaves out the columns that hold personal data and
free text (attributes, raw, items, placement, search_query) and masks a user id that is an email
address or phone number; --json prints every column of every row, one JSON object per line, the JSON
columns (raw included) as JSON. --follow then prints rows as they are stored, polling every
--interval seconds, until Ctrl-C. Exits 1 when the sink cannot be read or has no events table."""


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    return parse


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from consumers import replay

    ep_logging.configure(settings)
    return replay.main(settings, args.start, args.group)


REPLAY_HELP = """\
re-read the raw topic from --from into the sink, under a consumer group of its own, through the
consumer's own steps; idempotent (the sink's key), it exits once caught up to the high watermarks
taken at its start and prints what it read, stored and dead-lettered.

--from takes an ISO-8601 time with a timezone (2026-11-23T10:00:00Z; by Kafka record timestamp, the
moment the receiver wrote it), a duration back from now (2h, 30m, 1d12h), `earliest`, or an offset
(applied to every partition). Replay does not bypass the window: events are judged against their
received_at header exactly as the first time, so late/future events are dead-lettered again (the
dead-letter topic gets them twice), unless EVENTPIPE_WINDOW_HOURS is raised for the replay. Records
are only there within the topic's retention. Run one replay per group at a time."""


def _loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from eventpipe.loadgen.command import main

    return main(args, settings, os.environ)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from producers.importer import main

    ep_logging.configure(settings)
    return main(args, settings, os.environ)


def register(add: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    p = add("receiver", "the HTTP receiver for the four vendor APIs", _receiver)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--host", help="overrides EVENTPIPE_HTTP_HOST")
    p.add_argument("--port", type=int, help="overrides EVENTPIPE_HTTP_PORT")
    p.add_argument("--tls-cert", help="PEM certificate for native TLS (usually a proxy terminates TLS)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p = add("tenants", "reload the receiver's tenants file without a restart (key rotation)", _tenants)
    tenants_actions = p.add_subparsers(dest="action", required=True)
    r = tenants_actions.add_parser("reload", help="re-read the tenants file in every receiver worker")
    r.description = TENANTS_RELOAD_HELP
    r.add_argument("--port", type=int, help="the receiver's port (default EVENTPIPE_HTTP_PORT)")
    r.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for every worker (default 10)"
    )
    p = add(
        "consumer", "one consumer worker of the group (run more to scale, up to the partitions)", _consumer
    )
    p.add_argument("--group", help="consumer group (default EVENTPIPE_CONSUMER_GROUP)")
    add("migrate", "create the sink's events table (idempotent)", _migrate)
    add("dev", "the whole pipeline on this machine: Kafka, topics, receiver, two consumers, SQLite", _dev)
    p = add("status", "broker, topics, consumer group and lag, sink rows, recent dead letters", _status)
    p.description = (
        "Broker, raw and dead-letter topics, the consumer group's members and lag per partition, rows "
        "in the sink and dead letters of the last hour. Exits 1 when the broker or the sink cannot be "
        "reached (still printing what it learnt)."
    )
    p.add_argument("--group", help="consumer group (default EVENTPIPE_CONSUMER_GROUP)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    p = add("events", "the newest rows of the sink as a table or JSON lines; --follow for more", _events)
    p.description = EVENTS_HELP
    p.add_argument("--limit", "-n", type=_positive(int), default=20, help="rows to show (default 20)")
    p.add_argument("--source", choices=["topsort", "retailrocket", "dfinery", "impression"])
    p.add_argument("--type", help="an event_type, e.g. purchase or product_view")
    p.add_argument("--tenant", help="a tenant id")
    p.add_argument("--follow", "-f", action="store_true", help="then print new rows as they are stored")
    p.add_argument("--json", action="store_true", help="one JSON object per line with every column")
    p.add_argument(
        "--interval", type=_positive(float), default=1.0, help="seconds between polls with --follow"
    )
    p = add("replay", "re-read the raw topic from a time or offset into the sink (idempotent)", _replay)
    p.description = REPLAY_HELP
    p.add_argument("--from", dest="start", required=True, metavar="TIME|DURATION|earliest|OFFSET")
    p.add_argument("--group", help="consumer group of the replay (default EVENTPIPE_CONSUMER_GROUP-replay)")

    loadgen_arguments(
        add("loadgen", "realistic mixed vendor traffic against a receiver, with a summary", _loadgen)
    )
    p = add("import", "send a file of vendor request bodies (one JSON per line) onto Kafka", _import)
    p.add_argument("file", help="one request body per line; blank lines are skipped")
    p.add_argument("--source", required=True, choices=["topsort", "retailrocket", "dfinery", "impression"])
    p.add_argument("--tenant", required=True, help="a tenant of the tenants file (EVENTPIPE_TENANTS)")
    p.add_argument("--route", help="the vendor route, e.g. visitorEvents or view for retailrocket")
    p.add_argument("--rejects", metavar="FILE", help="write refused lines here (JSON lines)")
    p.add_argument("--from-line", type=int, default=1, help="start at this line (to resume an import)")
    p.add_argument(
        "--kafka-wait",
        type=float,
        default=30.0,
        help="seconds to wait for Kafka to take a record (default 30)",
    )
