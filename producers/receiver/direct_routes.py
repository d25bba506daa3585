"""The vendor routes without aiohttp's router: a POST whose path is exactly one of the app's plain POST
routes goes straight to its handler; everything else (other methods, dynamic paths, percent-encoded or
otherwise unusual targets, `Expect`) goes through the application as before. The router's resolve, the
match info built and frozen per request and the application's dispatch were ~13 % of a no-op aiohttp
request (issue #13)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def route_directly(server: web.Server, app: web.Application) -> None:
    """Put the direct routes in front of `server`'s handler (the application's). Call it after the
    runner's setup (the routes are frozen then) and before the first connection: each connection takes
    the server's handler when it opens. An app with middlewares keeps its router for every request: the
    direct routes would skip them."""
    if app.middlewares:
        return
    direct: dict[str, web.UrlMappingMatchInfo] = {}
    for route in app.router.routes():
        if route.method == hdrs.METH_POST and isinstance(route.resource, web.PlainResource):
            # What the router would make for this route, made once: no path parameters, this one app
            # (no sub-applications), frozen, so the handler's request.app and match_info are as before.
            info = web.UrlMappingMatchInfo({}, route)
            info.add_app(app)
            info.freeze()
            direct[route.resource.canonical] = info
    routed: Handler = server.request_handler

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == hdrs.METH_POST and not request.headers.get(hdrs.EXPECT):
            # The target as sent, query cut off: only a path the router would match as it stands.
            info = direct.get(request.raw_path.partition("?")[0])
            if info is not None:
                request._match_info = info  # type: ignore[attr-defined]  # what Application._handle sets
                # A web.Request: the server's request factory is the application's.
                return await info.handler(request)  # type: ignore[arg-type]
        return await routed(request)

    server.request_handler = handle
