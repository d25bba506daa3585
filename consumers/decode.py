"""Step 1: Kafka records to canonical events, with the same vendor Structs as the receiver. A record
that cannot be read at all becomes a dead letter whole; it never blocks its partition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.canonical import CanonicalEvent
from pipeline.errors import InvalidEvent
from pipeline.formats.base import VendorFormat
from pipeline.record import RecordMeta


class RawRecord(Protocol):
    """The parts of an aiokafka ConsumerRecord the pipeline reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A whole record that could not be decoded, with why."""

    record: RawRecord
    reason: str
    detail: str


@dataclass
class Decoded:
    events: list[CanonicalEvent] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)


def decode_records(records: Iterable[RawRecord], formats: Mapping[str, VendorFormat]) -> Decoded:
    out = Decoded()
    for record in records:
        try:
            meta = RecordMeta.from_headers(record.headers)
            fmt = formats.get(meta.source)
            if fmt is None:
                raise InvalidEvent("undecodable", f"unknown source {meta.source!r}")
            if record.value is None:
                raise InvalidEvent("undecodable", "record has no value")
            out.events.extend(fmt.to_canonical(record.value, meta))
        except InvalidEvent as exc:
            out.dead.append(DeadRecord(record, exc.reason, exc.detail))
    return out


def header(record: RawRecord, name: str) -> str | None:
    """A record header's value as text, None when absent."""
    for key, value in record.headers or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None
