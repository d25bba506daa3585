"""Where `eventpipe replay` starts: the `--from` value parsed (a time, a duration back from now,
`earliest`, or an offset) and resolved to one offset per partition. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

_OFFSET = re.compile(r"[0-9]+")
_DURATION = re.compile(r"(?:[0-9]+[dhms])+")
_DURATION_PART = re.compile(r"([0-9]+)([dhms])")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

USAGE = (
    "an ISO-8601 time with a timezone (2026-11-23T10:00:00Z), a duration back from now "
    "(2h, 30m, 1d12h), 'earliest', or an offset (applied to every partition)"
)


@dataclass(frozen=True)
class Earliest:
    def __str__(self) -> str:
        return "earliest"


@dataclass(frozen=True)
class AtOffset:
    offset: int

    def __str__(self) -> str:
        return f"offset {self.offset}"


@dataclass(frozen=True)
class AtTime:
    at: datetime  # UTC

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%dT%H:%M:%SZ}"


StartSpec = Earliest | AtOffset | AtTime


def parse(text: str, now: datetime) -> StartSpec:
    """Raises ValueError saying what is accepted."""
    value = text.strip().lower()
    if value == "earliest":
        return Earliest()
    if _OFFSET.fullmatch(value):
        return AtOffset(int(value))
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
        return AtTime((now - timedelta(seconds=seconds)).astimezone(UTC))
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--from {text!r}: expected {USAGE}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"--from {text!r}: the time needs a timezone (Z or an offset such as +09:00)")
    if at > now:
        raise ValueError(f"--from {text!r} is in the future: there is nothing to replay")
    return AtTime(at.astimezone(UTC))


def resolve(
    spec: StartSpec,
    first: Mapping[TopicPartition, int],
    next_: Mapping[TopicPartition, int],
    at_time: Mapping[TopicPartition, int | None] | None = None,
) -> dict[TopicPartition, int]:
    """The start offset of every partition, kept within [log start, high watermark]: an offset out of
    range would make the consumer reset to the log start and read everything."""
    starts: dict[TopicPartition, int] = {}
    for tp, end in next_.items():
        if isinstance(spec, Earliest):
            wanted = first[tp]
        elif isinstance(spec, AtOffset):
            wanted = spec.offset
        else:
            # No record at or after the time: nothing to read in this partition.
            hit = (at_time or {}).get(tp)
            wanted = end if hit is None else hit
        starts[tp] = min(max(wanted, first[tp]), end)
    return starts
