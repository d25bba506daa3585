"""What every vendor's traffic module provides, and the small pieces they share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from random import Random
from typing import Any, Generic, Protocol, TypeVar

import msgspec

T = TypeVar("T")

encode = msgspec.json.Encoder().encode
_document = msgspec.json.Decoder(dict[str, Any])


def document(raw: bytes) -> dict[str, Any]:
    return _document.decode(raw)


def random_uuid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Weighted(Generic[T]):
    """A fixed weighted choice, its cumulative weights computed once."""

    def __init__(self, table: Sequence[tuple[T, float]]) -> None:
        self._values = [value for value, _ in table]
        self._cumulative = list(accumulate(weight for _, weight in table))

    def pick(self, rng: Random) -> T:
        return rng.choices(self._values, cum_weights=self._cumulative)[0]


@dataclass(frozen=True, slots=True)
class Visit:
    """One visitor's identities, shared by the events of one request. The session id has 96 random
    bits, so events of different requests never encode to the same bytes."""

    user_id: str
    session_id: str
    cookie_id: str

    @classmethod
    def draw(cls, rng: Random) -> Visit:
        return cls(
            user_id=f"u-{rng.getrandbits(40):010x}",
            session_id=f"{rng.getrandbits(96):024x}",
            cookie_id=str(rng.getrandbits(48)),
        )


@dataclass(frozen=True, slots=True)
class Draft:
    """One event as it goes on the wire: its group (the Topsort array, the Retail Rocket method), its
    encoded JSON, and the identity the consumer will give it (event type and id)."""

    source: str
    event_type: str
    group: str
    raw: bytes
    event_id: str


@dataclass(frozen=True, slots=True)
class Body:
    path: str
    route: str
    body: bytes


def broken(vendor: VendorTraffic, rng: Random, draft: Draft) -> Draft:
    """The event with one of its vendor's breakers applied; it has no identity any more."""
    event = document(draft.raw)
    rng.choice(vendor.breakers(event, draft.group))()
    return Draft(draft.source, draft.event_type, draft.group, encode(event), "")


class VendorTraffic(Protocol):
    source: str
    # Events one request may carry (1 where the vendor takes no arrays).
    max_batch: int
    # The receiver itself refuses a request holding an event beyond the future skew (Topsort's
    # invalid_event_time); elsewhere such events reach the consumers' window.
    receiver_refuses_future: bool

    def draft(self, rng: Random, visit: Visit, when: datetime, index: int, *, may_omit_time: bool) -> Draft:
        """A valid event that occurred at `when`; `index` is its place in the request."""
        ...

    def breakers(self, event: dict[str, Any], group: str) -> list[Callable[[], object]]:
        """Ways to make this decoded event schema-invalid (each edits it in place) so that the
        receiver answers 400."""
        ...

    def request(self, drafts: Sequence[Draft], batched: bool) -> Body:
        """The request carrying these events (`batched`: the vendor's batch route where it has one)."""
        ...
