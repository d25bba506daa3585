"""The `eventpipe loadgen` command line. Kept free of heavy imports: the parser is built for every
`eventpipe` command."""

from __future__ import annotations

import argparse

SOURCES = "topsort,retailrocket,dfinery,impression"
DEMO_TENANT = "demo"


def duration(text: str) -> float:
    """Seconds, or with a unit: 90s, 10m, 1h."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30, 90s, 10m)") from None


def share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a share is between 0 and 1")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("traffic")
    t.add_argument(
        "--rate", type=float, default=50.0, help="requests per second, paced open-loop (default 50)"
    )
    t.add_argument(
        "--duration", type=duration, default=30.0, help="how long: seconds or 90s / 10m / 1h (default 30)"
    )
    t.add_argument(
        "--batch",
        type=int,
        default=5,
        help="events per request where the vendor takes arrays (1-50, default 5)",
    )
    t.add_argument("--sources", default=SOURCES, help=f"comma-separated vendors to send (default {SOURCES})")
    t.add_argument(
        "--duplicates",
        type=share,
        default=0.05,
        help="share of events that repeat an earlier one (default 0.05)",
    )
    t.add_argument(
        "--late", type=share, default=0.02, help="share of events older than the window (default 0.02)"
    )
    t.add_argument(
        "--future", type=share, default=0.01, help="share of events beyond the future skew (default 0.01)"
    )
    t.add_argument(
        "--invalid",
        type=share,
        default=0.02,
        help="share of events in schema-invalid requests (default 0.02)",
    )
    t.add_argument("--seed", type=int, help="makes the traffic repeatable (default: random, printed)")
    c = p.add_argument_group("target and credentials")
    c.add_argument("--url", help="the receiver (default http://EVENTPIPE_HTTP_HOST:EVENTPIPE_HTTP_PORT)")
    c.add_argument("--tenant", default=DEMO_TENANT, help="the tenant the keys belong to (default demo)")
    c.add_argument(
        "--credentials",
        help="JSON or TOML file with api_key, partner_id, jwt_secret or jwt, tenant "
        "(e.g. the demo-keys.json that `eventpipe dev` writes)",
    )
    c.add_argument("--api-key", help="Topsort / DFINERY bearer key and Retail Rocket apiKey")
    c.add_argument("--partner-id", help="Retail Rocket partnerId")
    c.add_argument("--jwt", help="Impression API token (as `eventpipe dev` prints it)")
    c.add_argument("--jwt-secret-env", help="variable holding the tenant's HS256 secret, to mint the token")
    c.add_argument(
        "--connections", type=int, default=32, help="at most this many requests on the wire (default 32)"
    )
    c.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the summary as JSON ('-' for stdout)")
    o.add_argument("--ledger", metavar="FILE", help="write every event of every 2xx request (JSON lines)")
