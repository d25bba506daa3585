"""L_http's server: aiohttp on uvloop with a handler that reads the body and answers 204, in N
processes sharing the port like the receiver's --workers. The ceiling of any aiohttp receiver here."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal

import uvloop
from aiohttp import web


async def _handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204)


async def _serve(port: int, reuse_port: bool) -> None:
    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/{tail:.*}", _handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _worker(port: int, reuse_port: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve(port, reuse_port))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    if a.workers <= 1:
        uvloop.run(_serve(a.port, False))
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(a.port, True)) for _ in range(a.workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
