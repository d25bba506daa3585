"""Accepting the receiver's connections in batches. uvloop's server accepts one connection per turn of
the event loop (libuv since 1.45, libuv/libuv#3696), so a worker whose turns are long (large bodies
under overload) leaves connections in the kernel's accept queue, unanswered, for seconds; here the
worker reads its listening socket itself, up to `BATCH` connections a turn, and hands each to aiohttp's
server (loop.connect_accepted_socket). While the valve is closed, an accepted connection is held by it
before aiohttp sees it, so not a byte of it is read (valve.py). docs/SCALING.md, "Overload"."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Final

import structlog
from aiohttp import web

from producers.receiver.valve import Valve

log = structlog.get_logger("eventpipe.receiver")

# Connections accepted per readiness of the listening socket: what asyncio's own loop takes (its
# backlog), in one turn; a larger batch would lengthen the turn for the requests in flight.
BATCH: Final = 128
BACKLOG: Final = 1024
ACCEPT_RETRY_SECONDS: Final = 1.0


def listening(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host` (each of its addresses), as TCPSite makes."""
    out = []
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in out:
            sock.close()
        raise
    return out


class Acceptor:
    """Accepts on `sockets` for `server` while started."""

    def __init__(
        self,
        sockets: list[socket.socket],
        server: web.Server,
        valve: Valve,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._sockets = sockets
        self._server = server
        self._valve = valve
        self._ssl = ssl_context
        self._handing: set[asyncio.Task[Any]] = set()
        self._closed = False

    def start(self) -> None:
        for sock in self._sockets:
            self._watch(sock)

    def close(self) -> None:
        """Accept no more and close the listening sockets (as TCPSite.stop does)."""
        loop = asyncio.get_running_loop()
        self._closed = True
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()

    def _watch(self, sock: socket.socket) -> None:
        if not self._closed:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listener: socket.socket) -> None:
        valve = self._valve
        for _ in range(BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except (ConnectionAbortedError, ConnectionResetError):
                continue  # gone before it was accepted
            except OSError as exc:
                # Out of descriptors or buffers (EMFILE, ENOBUFS...): the socket stays readable, so stop
                # watching it for a second rather than spin, as asyncio's own loop does.
                log.warning("accept_failed", error=str(exc), retry_seconds=ACCEPT_RETRY_SECONDS)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_SECONDS, self._watch, listener)
                return
            conn.setblocking(False)
            if valve.closed:
                valve.hold_socket(conn, self.hand_over)
            else:
                self.hand_over(conn)

    def hand_over(self, conn: socket.socket) -> None:
        """`conn` becomes one of aiohttp's connections (its handler reads it from the next turn on)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(self._server, conn, ssl=self._ssl))
        self._handing.add(task)
        task.add_done_callback(self._handed)

    def _handed(self, task: asyncio.Task[Any]) -> None:
        self._handing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A TLS handshake that failed, a client gone: the transport has closed the socket.
            log.debug("connection_not_opened", error=str(task.exception()))
