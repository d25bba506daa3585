"""Admission: how many request bytes one receiver worker takes on at once. A request reserves its body's
bytes from its headers, before a byte of the body is read; over the bound it is refused at once with the
vendor's 503 and Retry-After, and its body is never read. The reservation is released when the request's
handler ends, however it ends (reply, error, client gone)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Gauge

from pipeline.formats.base import Problem, Rejection
from producers.receiver.inflate import ENCODINGS as COMPRESSED
from producers.receiver.valve import Valve

# The reason label of a refusal in eventpipe_receiver_rejections_total.
OVERLOADED_REASON: Final = "overloaded"


def overloaded(retry_after: int) -> Rejection:
    return Rejection(Problem.UNAVAILABLE, "overloaded, retry later", retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class Bounds:
    """`max_bytes` of request bodies in flight per worker (0 = unlimited); `max_body_bytes` is what a
    body of unknown decoded size reserves."""

    max_bytes: int
    max_body_bytes: int

    def reservation(self, content_length: int | None, content_encoding: str) -> int:
        """The bytes a request holds once its body is read, decided from its headers alone.
        - identity, Content-Length given: that many (a larger one is refused 413 before reading it);
        - chunked (no Content-Length) or compressed: the body limit. Its decoded size is known only once
          it is read, and reserving as it arrives would let an admitted request be cut off half-read,
          its work wasted; the event SDKs send Content-Length (fetch, sendBeacon, every server library),
          so the pessimistic reservation costs only the rare chunked or compressed request."""
        if content_length is None or content_encoding.strip().lower() in COMPRESSED:
            return self.max_body_bytes
        return min(content_length, self.max_body_bytes)


class Admission:
    """The worker's reservations. Pure: no clock, no I/O. A request whose reservation does not fit is
    still admitted when nothing else is in flight, so that a body above `max_bytes` (a setting below the
    body limit) is never refused forever."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.bytes = 0
        self.requests = 0

    @property
    def limit(self) -> int:
        return self.bounds.max_bytes

    def admit(self, reserve: int) -> bool:
        limit = self.bounds.max_bytes
        if limit and self.requests and self.bytes + reserve > limit:
            return False
        self.bytes += reserve
        self.requests += 1
        return True

    def release(self, reserve: int) -> None:
        if self.requests <= 0 or reserve > self.bytes:
            raise RuntimeError(f"release of {reserve} bytes not reserved (holding {self.bytes})")
        self.bytes -= reserve
        self.requests -= 1


class Gate:
    """The app's admission: reservations from a request's headers; the valve, which holds connections
    unread while requests are refused (valve.py); and the in-flight bytes gauge, written once per
    event-loop tick in which they changed (a gauge write per request would cost as much as the decision:
    under --workers N each one is a locked write to the worker's metrics file). Until a request is
    refused, the valve costs a request two reads of `valve.closed`."""

    def __init__(
        self, bounds: Bounds, gauge: Gauge, wait_seconds: float, monotonic: Callable[[], float]
    ) -> None:
        self.admission = Admission(bounds)
        self.valve = Valve(self.admission, wait_seconds, monotonic)
        self._gauge = gauge
        self._written = 0
        self._scheduled = False
        gauge.set(0)  # the series exists from the start (under --workers: the worker's file)

    def reserve(self, request: web.BaseRequest) -> int | None:
        """The bytes reserved for the request, or None when it must be refused."""
        encoding = request.headers.get("Content-Encoding", "")
        reserve = self.admission.bounds.reservation(request.content_length, encoding)
        if not self.admission.admit(reserve):
            self.valve.refused(reserve)
            return None
        if self.valve.closed:
            self.valve.reserved(request.protocol, reserve)
        self._changed()
        return reserve

    def release(self, reserve: int, request: web.BaseRequest) -> None:
        """`request`'s reservation ends: it is answered, or its client is gone."""
        self.admission.release(reserve)
        self._changed()
        if self.valve.closed:
            self.valve.done(request)
            self.valve.released()

    def refused(self, request: web.BaseRequest) -> None:
        """`request` is answered 503 by admission."""
        if self.valve.closed:
            self.valve.done(request)

    def _changed(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self.admission.bytes != self._written:
            self._written = self.admission.bytes
            self._gauge.set(self._written)


class ClosingResponse(web.Response):
    """A refusal whose body has not all arrived: once the reply is written the connection is closed, so
    the rest of the body is never read. aiohttp would otherwise read and discard it for up to 10 s to
    keep the connection (RequestHandler.start, "lingering"); under overload that drain cost as much as
    reading an accepted body (docs/SCALING.md, "Overload"). The reply says `Connection: close`; a client
    that reads only once it has sent its whole body sees the connection reset instead, as from a proxy."""

    def __init__(self, protocol: RequestHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._protocol = protocol
        self.force_close()

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        # The transport writes out what it holds before it closes; aiohttp skips its lingering read.
        self._protocol.force_close()
