"""`python -m bench.decode`: µs per body of each vendor's request decode as the receiver runs it (msgspec
strict, the default) against the same Structs decoded in lax mode (`strict=False`, which also takes
numeric strings for numbers, "true" for booleans and numbers for datetimes), and of the whole receiver
check (validate) and the consumer's split (to_canonical) for scale; all measured in this process on the
bench's bodies (single events and batches of each vendor) and the SDK bodies of tests/data/sdk_bodies."""

from __future__ import annotations

import contextlib
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from bench import payloads
from pipeline.errors import InvalidEvent
from pipeline.formats import all_formats, dfinery, impression, retailrocket, topsort
from pipeline.formats.base import Rejection
from pipeline.record import RecordMeta
from tests import sdk_bodies

REPEATS = 15
# Each repeat runs about this long: long enough to dwarf the timer, short enough for 2 noisy cores.
REPEAT_SECONDS = 0.05
SKEW = 600.0


def _strict_decoder(source: str, route: str) -> msgspec.json.Decoder[Any]:
    """The decoder validate() runs first on a body of this route (the hot one)."""
    if source == "topsort":
        return topsort._DECODER
    if source == "retailrocket":
        return retailrocket._BATCH_DECODER if route == retailrocket.BATCH else retailrocket._DECODERS[route]
    if source == "dfinery":
        return dfinery._DECODER
    return impression._DECODER


def lax_twin(decoder: msgspec.json.Decoder[Any]) -> msgspec.json.Decoder[Any]:
    """The same type and hooks, in lax mode."""
    return msgspec.json.Decoder(
        decoder.type, strict=False, dec_hook=decoder.dec_hook, float_hook=decoder.float_hook
    )


def _runner(call: Callable[[bytes], object], body: bytes) -> Callable[[], None]:
    def run() -> None:
        # a refused SDK body costs its refusal
        with contextlib.suppress(Rejection, InvalidEvent, msgspec.DecodeError):
            call(body)

    return run


def _microseconds(*calls: Callable[[bytes], object], body: bytes) -> list[float]:
    """µs per call of each, their repeats interleaved: on a shared machine a burst of load then slows
    every contender alike instead of whichever ran during it. The best repeat of each counts."""
    runs = [_runner(call, body) for call in calls]
    numbers = [max(1, int(REPEAT_SECONDS / max(timeit.timeit(run, number=1), 1e-7))) for run in runs]
    best = [float("inf")] * len(runs)
    for _ in range(REPEATS):
        for index, (run, number) in enumerate(zip(runs, numbers, strict=True)):
            best[index] = min(best[index], timeit.timeit(run, number=number) / number * 1e6)
    return best


def _route(path: str) -> str:
    bare = path.split("?", 1)[0]
    return (
        bare.removeprefix("/1.0/")
        if bare.startswith("/1.0/")
        else {
            "/v2/events": "events",
            "/events": "events",
            "/api/v1/events": "events",
            "/upload/impression": "impression",
        }[bare]
    )


def _bodies(now: datetime) -> list[tuple[str, str, str, bytes]]:
    """(name, source, route, body) for every bench scenario and every SDK body."""
    bodies = [(s.name, s.vendor, _route(s.path), s.body()) for s in payloads.scenarios(now)]
    for sdk_body in sdk_bodies.load():
        bodies.append((f"sdk {sdk_body.id}", sdk_body.vendor, sdk_body.route, sdk_body.body))
    return bodies


def main() -> None:
    now = datetime.now(UTC)
    formats = all_formats()
    meta_ms = int(now.timestamp() * 1000)
    print(
        f"{'body':44} {'bytes':>6} {'strict µs':>10} {'lax µs':>8} {'lax/strict':>10} "
        f"{'validate µs':>11} {'canonical µs':>12}"
    )
    for name, source, route, body in _bodies(now):
        strict = _strict_decoder(source, route)
        lax = lax_twin(strict)
        fmt = formats[source]
        meta = RecordMeta(source=source, route=route, tenant="bench", received_at_ms=meta_ms, request_id="r")
        strict_us, lax_us = _microseconds(strict.decode, lax.decode, body=body)
        (validate_us,) = _microseconds(lambda b: fmt.validate(b, route, now, SKEW), body=body)  # noqa: B023
        (canonical_us,) = _microseconds(lambda b: fmt.to_canonical(b, meta), body=body)  # noqa: B023
        print(
            f"{name[:44]:44} {len(body):6} {strict_us:10.2f} {lax_us:8.2f} {lax_us / strict_us:9.2f}x "
            f"{validate_us:11.2f} {canonical_us:12.2f}"
        )


if __name__ == "__main__":
    main()
