"""The receiver's own accepting (acceptor.py) over real sockets: connections reach aiohttp's server,
and running out of descriptors pauses accepting for a while rather than spinning on a readable socket."""

from __future__ import annotations

import asyncio
import errno
import time

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from producers.receiver import acceptor as acceptor_module
from producers.receiver.acceptor import Acceptor
from producers.receiver.admission import Admission, Bounds
from producers.receiver.valve import Valve
from tests.receiver.http_raw import reply


class OutOfDescriptorsOnce(acceptor_module.socket.socket):
    failed = False

    def accept(self):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


async def _ok(request: web.BaseRequest) -> web.Response:
    return web.Response(text="ok")


async def test_out_of_descriptors_pauses_accepting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptor_module, "ACCEPT_RETRY_SECONDS", 0.2)
    listener = OutOfDescriptorsOnce()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    valve = Valve(Admission(Bounds(max_bytes=0, max_body_bytes=1)), 0, time.monotonic)
    server = web.Server(_ok)
    acceptor = Acceptor([listener], server, valve, None)
    with capture_logs() as logs:
        acceptor.start()
        began = time.monotonic()
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await asyncio.wait_for(reply(reader), 10)
    assert (status, body) == (200, b"ok")
    assert time.monotonic() - began >= 0.2 * 0.9  # accepted on the retry, not in a busy loop
    assert [e["event"] for e in logs] == ["accept_failed"]
    writer.close()
    acceptor.close()
    await server.shutdown(1)
