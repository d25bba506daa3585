"""What every vendor format module provides, and the vendor-neutral vocabulary of problems that each
one answers in its own shape."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pipeline.canonical import CanonicalEvent
from pipeline.record import RecordMeta


class Problem(enum.Enum):
    """Why a request is refused. Each vendor module maps these onto its documented status and body."""

    UNAUTHENTICATED = "unauthenticated"  # no credentials at all
    INVALID_CREDENTIALS = "invalid_credentials"  # unknown key, bad JWT
    FORBIDDEN = "forbidden"  # key valid, not for this partner / site
    MALFORMED = "malformed"  # not JSON, invalid UTF-8, wrong top-level shape
    INVALID = "invalid"  # a field's type or constraint is violated
    MISSING_FIELD = "missing_field"  # a required field is absent or empty
    EMPTY = "empty"  # nothing to ingest ({} for Topsort)
    EVENT_TIME = "event_time"  # timestamp unreadable or out of the accepted range
    UNSUPPORTED_PROPERTY = "unsupported_property"
    TOO_LARGE = "too_large"  # body above the limit after decompression
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TIMEOUT = "timeout"  # the client did not send its body in time
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # Kafka did not acknowledge in time; draining
    INTERNAL = "internal"


# The metric label for each problem (eventpipe_receiver_rejections_total{reason}).
REJECTION_REASON: Mapping[Problem, str] = {
    Problem.UNAUTHENTICATED: "auth",
    Problem.INVALID_CREDENTIALS: "auth",
    Problem.FORBIDDEN: "auth",
    Problem.MALFORMED: "schema",
    Problem.INVALID: "schema",
    Problem.MISSING_FIELD: "schema",
    Problem.EMPTY: "schema",
    Problem.EVENT_TIME: "schema",
    Problem.UNSUPPORTED_PROPERTY: "schema",
    Problem.TOO_LARGE: "too_large",
    Problem.UNSUPPORTED_MEDIA_TYPE: "schema",
    Problem.TIMEOUT: "timeout",
    Problem.RATE_LIMITED: "rate_limited",
    Problem.UNAVAILABLE: "unavailable",
    Problem.INTERNAL: "internal",
}


class Rejection(Exception):
    """A request refused for a reason the client can act on. `path` is the JSON path of the offending
    field when there is one (msgspec's `$.clicks[0].placement.position`)."""

    def __init__(
        self, problem: Problem, message: str, path: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.path = path
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request that passed validation: how many events it holds and the reply once Kafka has it."""

    events: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP route of a vendor: its path and the route name written to the record's `route`
    header (Retail Rocket: the method, e.g. `view`)."""

    path: str
    name: str


class VendorFormat(Protocol):
    """One vendor's API. Implementations are stateless and build their decoders once, at import."""

    source: str
    routes: tuple[Route, ...]
    # True when the vendor requires `Content-Type: application/json` (415 otherwise).
    requires_json_content_type: bool
    # The request body's type per route name, for /openapi.json (msgspec emits the JSON Schema).
    request_types: Mapping[str, Any]

    def validate(
        self, body: bytes, route: str, received_at: datetime, future_skew_seconds: float
    ) -> Accepted:
        """Decode and check a request body. Raises Rejection. Pure: no I/O."""
        ...

    def error(self, rejection: Rejection) -> Reply:
        """The vendor's own reply for a refused request."""
        ...

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        """Split a raw record into canonical events. Raises InvalidEvent when the body can never be
        read (it was not written by the receiver). Pure: no I/O."""
        ...
