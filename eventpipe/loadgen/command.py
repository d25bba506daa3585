"""`eventpipe loadgen`: options and credentials resolved, the plan sent, the summary printed.
Exit status 0 when every reply was the planned one, 1 otherwise, 2 for bad options."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import uvloop

from eventpipe.loadgen import summary as summary_mod
from eventpipe.loadgen.runner import Credentials, Ledger, LoadOptions, run
from eventpipe.loadgen.tally import Tally
from eventpipe.loadgen.traffic import Shares, TrafficConfig, TrafficPlan
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.tenants import mint_jwt
from producers.progress import ProgressDisplay

MAX_BATCH = 50


def _read_credentials(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
        data = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"credentials file {path} must hold an object")
    return data


def credentials(
    args: argparse.Namespace, environ: Mapping[str, str], ttl_seconds: int
) -> tuple[str, Credentials]:
    """(tenant, credentials): flags win over the credentials file; a JWT is minted from a secret when
    none is given."""
    found = _read_credentials(args.credentials) if args.credentials else {}
    tenant = str(found.get("tenant") or args.tenant)
    jwt = args.jwt or found.get("jwt")
    secret = environ.get(args.jwt_secret_env, "") if args.jwt_secret_env else found.get("jwt_secret")
    if args.jwt_secret_env and not secret:
        raise ConfigError(f"{args.jwt_secret_env} is not set")
    if not jwt and secret:
        jwt = mint_jwt(tenant, str(secret), ttl_seconds=ttl_seconds)
    creds = Credentials(
        api_key=args.api_key or found.get("api_key"),
        partner_id=args.partner_id or found.get("partner_id"),
        jwt=jwt,
    )
    return tenant, creds


def _config(args: argparse.Namespace, settings: Settings, tenant: str) -> TrafficConfig:
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    if not 1 <= args.batch <= MAX_BATCH:
        raise ConfigError(f"--batch must be within 1..{MAX_BATCH}")
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        raise ConfigError("--rate, --duration and --connections must be positive")
    try:
        return TrafficConfig(
            tenant=tenant,
            seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**31),
            sources=sources,
            shares=Shares(args.duplicates, args.late, args.future, args.invalid),
            batch=args.batch,
            window_hours={s: settings.window_for(s) for s in sources},
            future_skew_seconds=settings.future_skew_seconds,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@contextlib.contextmanager
def _open_ledger(path: str | None) -> Iterator[Ledger | None]:
    if path is None:
        yield None
        return
    with open(path, "wb") as stream:
        yield Ledger(stream)


def _write_json(path: str, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)


def main(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str], out: TextIO | None = None
) -> int:
    # With the JSON on stdout, the progress and the text summary go to stderr.
    out = out or (sys.stderr if args.json == "-" else sys.stdout)
    ttl = int(args.duration) + 3600
    tenant, creds = credentials(args, environ, ttl)
    config = _config(args, settings, tenant)
    creds.check(list(config.sources))
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
    url = args.url or f"http://{host}:{settings.http_port}"
    options = LoadOptions(url, args.rate, args.duration, creds, args.connections, args.timeout)
    plan = TrafficPlan(config)
    print(
        f"loadgen: {options.total} requests to {url} over {args.duration:g} s, seed {config.seed}", file=out
    )
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    display = ProgressDisplay("loadgen", options.total, file=out)
    tally = Tally()
    began = time.monotonic()
    interrupted = False
    with _open_ledger(args.ledger) as ledger, display:
        try:
            uvloop.run(
                run(
                    options,
                    plan,
                    tally=tally,
                    ledger=ledger,
                    on_progress=lambda t, s: display.update(sum(t.requests.values()), s),
                )
            )
        except KeyboardInterrupt:
            # Ctrl-C: requests still on the wire are abandoned; the summary covers what was answered.
            interrupted = True
    elapsed = time.monotonic() - began
    info = summary_mod.RunInfo(
        url=url,
        tenant=tenant,
        seed=config.seed,
        rate=args.rate,
        duration_s=args.duration,
        batch=args.batch,
        connections=args.connections,
        sources=config.sources,
        shares={
            "duplicates": args.duplicates,
            "late": args.late,
            "future": args.future,
            "invalid": args.invalid,
        },
        started_at=started_at,
        elapsed_s=round(elapsed, 3),
    )
    summary = summary_mod.build(tally, info)
    print(summary_mod.render(summary), file=out)
    if args.json:
        _write_json(args.json, summary)
    if interrupted:
        print("interrupted: the figures cover the requests answered before Ctrl-C", file=out)
        return 130
    return 0 if tally.not_as_planned == 0 and tally.skipped == 0 else 1
