"""The direct routes in front of the application: an exact POST target reaches its handler without the
router, with request.app and match_info as the router gives them; every other request is the
application's, answered as before (404, 405, 100-continue, percent-encoding, middlewares)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from producers.receiver.direct_routes import route_directly

Client = TestClient[web.Request, web.Application]
Served = tuple[Client, list[str]]
NAME = web.AppKey("name", str)


async def _echo(request: web.Request) -> web.Response:
    route = request.match_info.route
    assert isinstance(route, web.ResourceRoute)
    name = request.app[NAME]
    return web.Response(text=f"{name} {route.method} {route.resource.canonical} {request.query_string}")


async def _method(request: web.Request) -> web.Response:
    return web.Response(text=f"method {request.match_info['method']}")


@pytest.fixture
def serve(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Callable[..., Awaitable[Served]]:
    async def make(middlewares: tuple[web.Middleware, ...] = ()) -> Served:
        app = web.Application(middlewares=middlewares)
        app[NAME] = "app"
        app.router.add_post("/v2/events", _echo)
        app.router.add_post("/1.0/{method}", _method)
        server = await aiohttp_server(app)
        assert server.runner is not None and server.runner.server is not None
        routed: list[str] = []
        handler = server.runner.server.request_handler

        async def counting(request: web.BaseRequest) -> web.StreamResponse:
            routed.append(request.raw_path)
            return await handler(request)

        server.runner.server.request_handler = counting
        route_directly(server.runner.server, app)
        return await aiohttp_client(server), routed

    return make


async def test_an_exact_post_target_skips_the_router_with_app_and_match_info_as_before(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    client, routed = await serve()
    resp = await client.post("/v2/events?x=1", data=b"{}")
    assert (resp.status, await resp.text()) == (200, "app POST /v2/events x=1")
    assert routed == []


@pytest.mark.parametrize(
    ("method", "target", "status", "text"),
    [
        pytest.param("POST", "/v2/%65vents", 200, "app POST /v2/events ", id="percent-encoded"),
        pytest.param("POST", "/v2/events/", 404, "404: Not Found", id="trailing-slash"),
        pytest.param("POST", "/1.0/push", 200, "method push", id="dynamic"),
        pytest.param("GET", "/v2/events", 405, "405: Method Not Allowed", id="other-method"),
        pytest.param("POST", "/nowhere", 404, "404: Not Found", id="unknown"),
    ],
)
async def test_every_other_request_is_the_applications(
    serve: Callable[..., Awaitable[Served]], method: str, target: str, status: int, text: str
) -> None:
    client, routed = await serve()
    # As sent: yarl would otherwise decode %65 to "e" before the request leaves.
    resp = await client.request(method, URL(target, encoded=True), data=b"{}")
    assert (resp.status, await resp.text()) == (status, text)
    assert len(routed) == 1


async def test_expect_100_continue_is_answered_by_the_application(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    client, routed = await serve()
    resp = await client.post("/v2/events", data=b"{}", expect100=True)
    assert (resp.status, await resp.text()) == (200, "app POST /v2/events ")
    assert routed == ["/v2/events"]


async def test_an_app_with_middlewares_keeps_its_router_for_every_request(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    seen: list[str] = []

    @web.middleware
    async def note(
        request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    client, routed = await serve((note,))
    resp = await client.post("/v2/events", data=b"{}")
    assert resp.status == 200
    assert seen == ["/v2/events"]
    assert routed == ["/v2/events"]
