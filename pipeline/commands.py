"""The long-running commands (receiver, consumer, dev, migrate), registered on the CLI parser."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

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
    from pipeline import dev

    ep_logging.configure(settings)
    return dev.run(settings, os.environ)


def register(add: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    p = add("receiver", "the HTTP receiver for the four vendor APIs", _receiver)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--host", help="overrides EVENTPIPE_HTTP_HOST")
    p.add_argument("--port", type=int, help="overrides EVENTPIPE_HTTP_PORT")
    p.add_argument("--tls-cert", help="PEM certificate for native TLS (usually a proxy terminates TLS)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p = add(
        "consumer", "one consumer worker of the group (run more to scale, up to the partitions)", _consumer
    )
    p.add_argument("--group", help="consumer group (default EVENTPIPE_CONSUMER_GROUP)")
    add("migrate", "create the sink's events table (idempotent)", _migrate)
    add("dev", "the whole pipeline on this machine: Kafka, topics, receiver, two consumers, SQLite", _dev)
