"""`python -m bench.json_checks`: µs per body of json_checks.check against the check it replaced (a
regex pass over every string for the depth, then the stdlib parser with a Python call per object and
number), both measured in this process on the bench's bodies, the corpus and a few offending bodies."""

from __future__ import annotations

import json
import re
import timeit
from collections.abc import Callable
from itertools import accumulate, repeat
from pathlib import Path

from bench import payloads
from pipeline.formats import json_checks
from pipeline.formats.base import Problem, Rejection

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "vendor_cases"
REPEATS = 7
# Each repeat runs about this long: long enough to dwarf the timer, short enough for 2 noisy cores.
REPEAT_SECONDS = 0.05

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def _old_depth_exceeds(body: bytes, limit: int = json_checks.MAX_DEPTH) -> bool:
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_A_BRACKET)
    return bool(brackets) and max(accumulate(map(int.__sub__, brackets.translate(_STEP), repeat(1)))) > limit


def old_check(body: bytes) -> None:
    """The check as it was: its parse is what json_checks now keeps for the bodies it is unsure of."""
    if _old_depth_exceeds(body):
        raise Rejection(
            Problem.MALFORMED, f"JSON is nested too deeply (more than {json_checks.MAX_DEPTH} levels)"
        )
    json_checks._check_exactly(body)


def _corpus_bodies() -> list[bytes]:
    """The corpus bodies the schema decode could accept: JSON texts (the check runs on no others)."""
    bodies = []
    for path in sorted(CORPUS.glob("*.json")):
        request = json.loads(path.read_text(encoding="utf-8"))["request"]
        if "body" in request:
            bodies.append(json.dumps(request["body"], ensure_ascii=False).encode())
    return bodies


def _bodies() -> dict[str, list[bytes]]:
    kinds = {s.name: [s.body()] for s in payloads.scenarios()}
    batch = kinds["topsort-batch"][0]
    kinds["corpus (all, summed)"] = _corpus_bodies()
    kinds["topsort-batch, 1.295e1 prices"] = [batch.replace(b"12.95", b"1.295e1")]
    kinds["topsort-batch, duplicate key"] = [batch[:-1] + b',"clicks":[]}']
    kinds["topsort-batch, 1e400"] = [batch[:-1] + b',"x":1e400}']
    return kinds


def _outcome(check: Callable[[bytes], None], body: bytes) -> tuple[str, str, str | None] | None:
    try:
        check(body)
    except Rejection as refused:
        return refused.problem.value, refused.message, refused.path
    return None


def _microseconds(check: Callable[[bytes], None], bodies: list[bytes]) -> float:
    def run() -> None:
        for body in bodies:
            _outcome(check, body)

    number = max(1, int(REPEAT_SECONDS / max(timeit.timeit(run, number=1), 1e-7)))
    return min(timeit.repeat(run, number=number, repeat=REPEATS)) / number * 1e6


def main() -> None:
    print(f"{'body':32} {'bytes':>7} {'old µs':>9} {'new µs':>9} {'old/new':>8}")
    for kind, bodies in _bodies().items():
        for body in bodies:
            assert _outcome(old_check, body) == _outcome(json_checks.check, body), (kind, body[:80])
        old = _microseconds(old_check, bodies)
        new = _microseconds(json_checks.check, bodies)
        size = sum(map(len, bodies))
        print(f"{kind:32} {size:7} {old:9.1f} {new:9.1f} {old / new:7.1f}x")


if __name__ == "__main__":
    main()
