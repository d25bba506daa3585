"""The Kafka record contract between the receiver and the consumers: one record per accepted request,
value = the body as received (after gzip/deflate decoding), metadata in headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.errors import InvalidEvent

SCHEMA_VERSION = "1"
HEADER_NAMES = ("source", "route", "tenant", "received_at", "request_id", "schema")


@dataclass(frozen=True, slots=True)
class RecordMeta:
    source: str
    route: str
    tenant: str
    received_at_ms: int
    request_id: str
    schema: str = SCHEMA_VERSION

    @property
    def received_at(self) -> datetime:
        """The receiver's clock when it accepted the request, as aware UTC: every format stores it, and
        the window measures against it. Decoded here, once, rather than by each of the four formats.
        A value out of datetime's range (a record the receiver did not write) raises ValueError or
        OverflowError."""
        return datetime.fromtimestamp(self.received_at_ms / 1000, tz=UTC)

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("source", self.source.encode()),
            ("route", self.route.encode()),
            ("tenant", self.tenant.encode()),
            ("received_at", str(self.received_at_ms).encode()),
            ("request_id", self.request_id.encode()),
            ("schema", self.schema.encode()),
        ]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]] | None) -> RecordMeta:
        """Read the receiver's headers back; a record without them was not written by the receiver
        and can never be processed."""
        found: dict[str, str] = {}
        for name, value in headers or ():
            if name in HEADER_NAMES and value is not None:
                try:
                    found[name] = value.decode()
                except UnicodeDecodeError as exc:
                    raise InvalidEvent("undecodable", f"header {name} is not UTF-8") from exc
        missing = [n for n in HEADER_NAMES if n not in found]
        if missing:
            raise InvalidEvent("undecodable", f"record lacks headers: {', '.join(missing)}")
        if found["schema"] != SCHEMA_VERSION:
            raise InvalidEvent("undecodable", f"unknown record schema {found['schema']!r}")
        try:
            received_at_ms = int(found["received_at"])
        except ValueError as exc:
            raise InvalidEvent("undecodable", "received_at header is not epoch milliseconds") from exc
        return cls(
            source=found["source"],
            route=found["route"],
            tenant=found["tenant"],
            received_at_ms=received_at_ms,
            request_id=found["request_id"],
            schema=found["schema"],
        )
