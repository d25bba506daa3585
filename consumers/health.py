"""Each consumer's small HTTP side: /metrics, /healthz (alive) and /readyz (group joined and sink
reachable), on EVENTPIPE_METRICS_PORT (0 picks a free port)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.metrics import Metrics


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: dict[str, bool]


class HealthServer:
    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Callable[[], Readiness]) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # With port 0 the kernel chose: read it back so tests and `eventpipe dev` can find us.
        for address in self._runner.addresses:
            self.port = int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        state = self._readiness()
        self._metrics.ready.labels("consumer").set(1 if state.ready else 0)
        return web.json_response({"ready": state.ready, **state.detail}, status=200 if state.ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        self._metrics.ready.labels("consumer").set(1 if self._readiness().ready else 0)
        return web.Response(
            body=generate_latest(self._metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
