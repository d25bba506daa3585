"""The `eventpipe` command: one entry point for running, operating and testing the pipeline. The
environment is read here, once, and the resulting Settings passed down."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Sequence

from pipeline import kafka_cluster, kafka_local, tenants, topics
from pipeline import settings as settings_mod
from pipeline.errors import ConfigError, PipelineError
from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.action == "start":
            nodes = args.nodes
            print(kafka_local.start(settings) if nodes == 1 else kafka_cluster.start(settings, nodes))
        elif args.action == "stop":
            print(kafka_cluster.stop(settings))
        else:
            return _kafka_status(args, settings)
    except (kafka_local.KafkaLocalError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _kafka_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every known node runs and answers."""
    nodes = kafka_cluster.status(settings)
    if args.json:
        print(kafka_cluster.status_json(nodes))
    elif not kafka_cluster.is_cluster(settings):
        print(kafka_local.status(settings)[1])  # the single broker, as before (pid, memory)
    else:
        for node in nodes:
            state = "running" if node.running else ("not answering" if node.pid else "down")
            print(f"node {node.node_id} on {node.bootstrap}: {state} (pid {node.pid or '-'})")
    return 0 if all(node.running for node in nodes) else 1


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from pipeline.kafka_diagnose import connection_problem

    try:
        for line in asyncio.run(topics.ensure(settings)):
            print(line)
    except KafkaError as exc:
        problem = asyncio.run(connection_problem(settings)) or exc
        print(f"error: Kafka at {settings.kafka_bootstrap}: {problem}", file=sys.stderr)
        return 1
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "hash":
        key = args.key if args.key is not None else getpass.getpass("key: ")
        print(tenants.key_digest(key))
        return 0
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        print(f"error: set {args.secret_env} to the tenant's HS256 secret", file=sys.stderr)
        return 1
    print(tenants.mint_jwt(args.tenant, secret, ttl_seconds=args.ttl))
    return 0


def build_parser() -> argparse.ArgumentParser:
    epilog = settings_mod.describe()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="eventpipe",
        description="Drop-in ingestion for e-commerce behaviour events: vendor APIs in, Kafka, storage out.",
        epilog=epilog,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=fmt)
        p.set_defaults(handler=handler)
        return p

    p = add("kafka", "start, stop or check the local Kafka broker (or a local cluster: --nodes 3)", _kafka)
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        choices=range(1, 10),
        metavar="N",
        help="start: N KRaft nodes on the base port + 0, 100, 200... (default 1)",
    )
    p.add_argument("--json", action="store_true", help='status: {"nodes": [...]} as JSON')
    add("topics", "create the raw and dead-letter topics if missing (idempotent)", _topics).add_argument(
        "action", choices=["ensure"]
    )
    p = add("keys", "hash an API key for the tenants file, or mint an Impression API JWT", _keys)
    keys = p.add_subparsers(dest="action", required=True)
    h = keys.add_parser("hash", help="print the sha256 digest of a key (prompted when not given)")
    h.add_argument("key", nargs="?")
    j = keys.add_parser("jwt", help="mint an HS256 JWT whose sub claim is the tenant")
    j.add_argument("--tenant", required=True)
    j.add_argument("--secret-env", default="EVENTPIPE_JWT_SECRET", help="variable holding the secret")
    j.add_argument("--ttl", type=int, default=30 * 86400, help="lifetime in seconds")
    _register_runtime_commands(add)
    return parser


def _register_runtime_commands(add: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    """Commands whose modules import the heavier runtime (aiohttp app, consumer): imported lazily so
    that `eventpipe kafka ...` stays quick."""
    from eventpipe import commands

    commands.register(add)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_mod.from_environment()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
