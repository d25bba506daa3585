"""The test shop: one page (pages/shop.html) whose script sends what the test's config says, Topsort's
SDK module from node_modules as the shop would bundle it, and the config itself. Served on its own
port, so its origin is never the receiver's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

PAGES = Path(__file__).resolve().parent / "pages"
SDK_MODULE = Path("@topsort") / "sdk" / "dist" / "index.js"
CONFIG = web.AppKey("config", dict[str, Any])


def shop_app(node_modules: Path) -> web.Application:
    app = web.Application()
    app[CONFIG] = {"steps": []}
    sdk = node_modules / SDK_MODULE

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            body=(PAGES / "shop.html").read_bytes(), content_type="text/html", charset="utf-8"
        )

    async def module(request: web.Request) -> web.Response:
        return web.Response(body=sdk.read_bytes(), content_type="text/javascript", charset="utf-8")

    async def config(request: web.Request) -> web.Response:
        return web.json_response(request.app[CONFIG])

    app.router.add_get("/", page)
    app.router.add_get("/sdk/topsort.js", module)
    app.router.add_get("/config.json", config)
    return app


@dataclass
class Shop:
    server: TestServer

    @classmethod
    async def serve(cls, app: web.Application, aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Shop:
        return cls(await aiohttp_server(app))

    @property
    def origin(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def url(self) -> str:
        return self.origin + "/"

    def plan(self, steps: list[dict[str, Any]]) -> None:
        """What the page sends next time it is opened."""
        self.server.app[CONFIG]["steps"] = steps  # the app is frozen once served: its dict is not
