"""Holding connections back while a worker is at its bound of bytes in flight: a connection with no
admitted request is not read, so the worker's CPU (and, once the connection's kernel buffers fill, its
client's bandwidth) goes to the admitted bodies rather than to reading and refusing the rest. A
connection is held when it is accepted (acceptor.py: aiohttp does not see it yet) and when its request
is answered (its transport's reading paused). Held connections are let through oldest first as
reservations end; one held longer than the wait is let through all the same, and its request is refused
(503) unless there is room by then."""

from __future__ import annotations

import asyncio
import socket
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final, Generic, Protocol, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

K = TypeVar("K", bound=Hashable)

# How often a closed valve looks at its held connections: expiry is this late at most.
TICK_SECONDS: Final = 0.02


class Held(Generic[K]):
    """The held connections, oldest first, each with when it was held. Pure: the times are given."""

    def __init__(self) -> None:
        # OrderedDict: popping the oldest is O(1) (a dict's first entry is not, after many deletions).
        self._since: OrderedDict[K, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, key: K) -> bool:
        return key in self._since

    def hold(self, key: K, now: float) -> None:
        if key not in self._since:
            self._since[key] = now

    def drop(self, key: K) -> None:
        self._since.pop(key, None)

    def oldest(self) -> K | None:
        """The longest held, no longer held."""
        if not self._since:
            return None
        return self._since.popitem(last=False)[0]

    def expired(self, cutoff: float) -> list[K]:
        """Those held at or before `cutoff`, no longer held, oldest first."""
        out = []
        while self._since:
            key, since = next(iter(self._since.items()))
            if since > cutoff:
                break
            del self._since[key]
            out.append(key)
        return out


class Reservations(Protocol):
    """What the valve reads of the worker's admission (admission.Admission, which builds the valve)."""

    @property
    def bytes(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def limit(self) -> int: ...


def room_for(admission: Reservations, arriving: int, estimate: int) -> int:
    """How many more requests of `estimate` bytes to let through, with `arriving` let through already
    whose requests have not reserved yet. An empty worker takes one of any size (Admission.admit)."""
    limit = admission.limit
    if not limit:
        return 1 << 30
    if estimate <= 0:
        return 1
    if admission.requests == 0 and arriving == 0:
        return max(1, (limit - admission.bytes) // estimate)
    return max(0, (limit - admission.bytes - arriving * estimate) // estimate)


Connection = RequestHandler | socket.socket  # held answered, or held accepted (not aiohttp's yet)


class Valve:
    """One worker's valve. Closed by a refusal; while closed, a connection is held when it is accepted
    and when its request ends with its body read (keep-alive); it opens again once a tick passes with no
    connection held and no refusal. An answered connection is held by its transport's pause_reading: at
    that point aiohttp itself holds no pause of the connection's reading that a resume would undo."""

    def __init__(self, admission: Reservations, wait_seconds: float, monotonic: Callable[[], float]) -> None:
        self.closed = False
        self._admission = admission
        self._wait = wait_seconds
        self._monotonic = monotonic
        self._held: Held[Connection] = Held()
        self._hand_over: dict[socket.socket, Callable[[socket.socket], None]] = {}
        # Let through for room, their request not yet reserved: counted against the room until it has
        # (or until the next tick: a connection let through may have nothing to send yet, and one held
        # when accepted is a different object once aiohttp's).
        self._arriving: set[Connection] = set()
        self._estimate = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._enabled = wait_seconds > 0 and admission.limit > 0

    def refused(self, reserve: int) -> None:
        """A request of `reserve` bytes did not fit: hold connections from now on."""
        if not self._enabled:
            return
        self._refused = True
        self._estimate = reserve
        if not self.closed:
            self.closed = True
            self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def reserved(self, protocol: RequestHandler, reserve: int) -> None:
        """A request on `protocol` reserved `reserve` bytes (closed valve only: the caller checks)."""
        self._arriving.discard(protocol)
        self._estimate = reserve

    def hold(self, protocol: RequestHandler) -> None:
        transport = protocol.transport
        if not self.closed or transport is None or transport.is_closing():
            return
        transport.pause_reading()
        self._arriving.discard(protocol)
        self._held.hold(protocol, self._monotonic())

    def hold_socket(self, conn: socket.socket, hand_over: Callable[[socket.socket], None]) -> None:
        """An accepted connection, held until `hand_over` makes it aiohttp's."""
        self._hand_over[conn] = hand_over
        self._held.hold(conn, self._monotonic())

    def done(self, request: web.BaseRequest) -> None:
        """`request` is answered (closed valve only): its connection, if it is kept and the body was read
        whole, waits behind those held before it for its next request to be read."""
        if request.keep_alive and request.content.is_eof():
            self.hold(request.protocol)

    def released(self) -> None:
        """A reservation ended (closed valve only): let through as many as there is room for."""
        self._let_through_for_room()

    def lost(self, protocol: RequestHandler) -> None:
        self._held.drop(protocol)
        self._arriving.discard(protocol)

    def open(self) -> None:
        """Hold no more: shutting down. The answered connections are let through (aiohttp closes the idle
        ones); those accepted and still held are closed, as the kernel's accept queue is."""
        self._enabled = False
        for conn in self._hand_over:
            self._held.drop(conn)
            conn.close()
        self._hand_over.clear()
        self._open()

    @property
    def held(self) -> int:
        return len(self._held)

    def _open(self) -> None:
        self.closed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while (held := self._held.oldest()) is not None:
            self._resume(held)
        self._arriving.clear()

    def _let_through_for_room(self) -> None:
        for _ in range(room_for(self._admission, len(self._arriving), self._estimate)):
            held = self._held.oldest()
            if held is None:
                return
            self._arriving.add(held)
            self._resume(held)

    def _tick(self) -> None:
        self._timer = None
        self._arriving.clear()
        self._let_through_for_room()
        # Held past the wait: read now, and refused unless there is room by then (CoDel's idea: a
        # queue's wait is bounded, not its length).
        for held in self._held.expired(self._monotonic() - self._wait):
            self._resume(held)
        if not self._held and not self._refused:
            self._open()
            return
        self._refused = False
        self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _resume(self, held: Connection) -> None:
        if isinstance(held, socket.socket):
            self._hand_over.pop(held)(held)
            return
        transport = held.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


def forget_lost(server: web.Server, valve: Valve) -> None:
    """Let `valve` forget `server`'s connections as they close."""
    lost = server.connection_lost

    def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
        valve.lost(handler)
        lost(handler, exc)

    server.connection_lost = connection_lost  # type: ignore[method-assign]
