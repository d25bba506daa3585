"""CORS on the browser-facing routes, against the real broker: preflights answered (and counted under
their own route) without a Kafka write, Access-Control-Allow-Origin on every reply of those routes,
errors included, each tenant's allowed origins enforced on requests and, where the query names the
tenant, on preflights; text/plain bodies (beacons) taken as JSON; DFINERY, server to server, left alone."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline import origins, tenants
from pipeline.formats import all_formats
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from pipeline.tenants import mint_jwt
from producers.receiver import cors
from producers.receiver.app import STATE, create_app
from tests.corpus import API_KEY, PARTNER_ID, Case, jwt_secret, load_cases, sample_per_vendor
from tests.kafka_util import read_all, record_count
from tests.receiver.conftest import serve, wait_until_ready

pytestmark = pytest.mark.kafka

Client = TestClient[web.Request, web.Application]
SHOP = "https://shop-a.example"
ROGUE = "https://elsewhere.example"
SAMPLES = sample_per_vendor()
BROWSER_CASES = [c for c in load_cases() if cors.browser_facing(c.vendor)]
BROWSER_ROUTES = [
    (fmt.source, route.path)
    for fmt in all_formats().values()
    if cors.browser_facing(fmt.source)
    for route in fmt.routes
]


def _lower(text: str) -> set[str]:
    return {item.strip().lower() for item in text.split(",")}


def _with_origins(
    directory: tenants.TenantDirectory, tenant_id: str, *allowed: str
) -> tenants.TenantDirectory:
    policy = origins.parse(list(allowed), tenant_id)
    return tenants.TenantDirectory(
        tuple(
            dataclasses.replace(t, allowed_origins=policy) if t.id == tenant_id else t
            for t in directory.tenants
        )
    )


@pytest.fixture
async def start(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    kafka_settings: Settings,
    directory: tenants.TenantDirectory,
) -> Callable[..., Awaitable[Client]]:
    async def make(directory: tenants.TenantDirectory = directory, **overrides: Any) -> Client:
        app = create_app(kafka_settings.replace(**overrides), directory, Metrics(CollectorRegistry()))
        client = await serve(app, aiohttp_server, aiohttp_client)
        await wait_until_ready(client)
        return client

    return make


async def _post(client: Client, case: Case, **changes: Any) -> Any:
    params = {**case.query, **changes.pop("query", {})}
    headers = {**case.headers, **changes.pop("headers", {})}
    return await client.post(case.path, params=params, headers=headers, data=changes.pop("data", case.body))


def _preflight_headers(origin: str, request_headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": request_headers,
    }


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples that carry these labels."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


@pytest.mark.parametrize(("source", "path"), [*BROWSER_ROUTES, ("retailrocket", "/1.0/noSuchMethod")])
async def test_preflight_on_every_browser_route_answers_204_and_writes_nothing(
    source: str, path: str, start, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    # What @topsort/sdk sends (its fetch names these headers; the browser lower-cases and sorts them).
    resp = await client.options(
        path, headers=_preflight_headers(SHOP, "accept,authorization,content-type,x-ua")
    )
    assert resp.status == 204
    assert await resp.read() == b""
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert "post" in _lower(resp.headers["Access-Control-Allow-Methods"])
    assert {"authorization", "content-type", "accept", "x-ua"} <= _lower(
        resp.headers["Access-Control-Allow-Headers"]
    )
    assert "*" not in resp.headers["Access-Control-Allow-Headers"]
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "origin" in _lower(resp.headers["Vary"])
    metrics = (await (await client.get("/metrics")).read()).decode()
    counted = _metric(
        metrics, "eventpipe_receiver_requests_total", source=source, route="preflight", status="204"
    )
    assert counted == 1.0
    assert await record_count(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic) == 0


async def test_dfinery_is_server_to_server_and_answers_no_cors(start) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    preflight = await client.options(
        "/api/v1/events", headers=_preflight_headers(SHOP, "authorization,content-type")
    )
    assert preflight.status == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers
    reply = await _post(client, SAMPLES["dfinery"], headers={"Origin": SHOP})
    assert reply.status == 200
    assert "Access-Control-Allow-Origin" not in reply.headers
    # Its 415 stays: a text/plain body is a browser's, and DFINERY has none.
    plain = await _post(client, SAMPLES["dfinery"], headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert plain.status == 415


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BROWSER_CASES])
async def test_every_reply_of_a_browser_route_carries_the_origin_errors_included(case: Case, start) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    resp = await _post(client, case, headers={"Origin": SHOP})
    await resp.read()
    assert resp.status == case.status
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert {"retry-after", "x-request-id"} <= _lower(resp.headers["Access-Control-Expose-Headers"])
    assert "origin" in _lower(resp.headers["Vary"])


async def test_a_rate_limited_reply_lets_the_page_read_retry_after(start) -> None:  # type: ignore[no-untyped-def]
    client = await start(rate_limits={"topsort": 1 / 3600}, rate_limit_bursts={"topsort": 1})
    case = SAMPLES["topsort"]
    statuses = [(await _post(client, case, headers={"Origin": SHOP})) for _ in range(2)]
    assert [r.status for r in statuses] == [204, 429]
    limited = statuses[1]
    assert limited.headers["Access-Control-Allow-Origin"] == SHOP
    assert "retry-after" in _lower(limited.headers["Access-Control-Expose-Headers"])
    assert int(limited.headers["Retry-After"]) > 0


async def test_a_disallowed_origin_is_refused_in_the_vendors_shape_and_never_stored(
    start, directory, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await start(_with_origins(directory, "shop-a", SHOP, "https://*.shop-a.example"))
    expected_403 = {
        "topsort": lambda body: body["errCode"] == "forbidden",
        "retailrocket": lambda body: body["error"]["code"] == "forbidden",
        "impression": lambda body: body["errors"]["error"]["name"] == "ForbiddenError",
    }
    for source, is_vendor_403 in expected_403.items():
        case = SAMPLES[source]
        refused = await _post(client, case, headers={"Origin": ROGUE})
        assert refused.status == 403, source
        assert is_vendor_403(await refused.json()), source
        assert refused.headers[cors.ERROR_HEADER] == cors.ORIGIN_REFUSED
        # Readable by the page, so its SDK sees a final 403 rather than a network error to retry.
        assert refused.headers["Access-Control-Allow-Origin"] == ROGUE
        for allowed in (SHOP, "https://www.shop-a.example", None):
            headers = {"Origin": allowed} if allowed else {}
            accepted = await _post(client, case, headers=headers)
            assert accepted.status == case.status, (source, allowed)
    # shop-b allows any origin (no allowed_origins): its requests from anywhere are taken.
    other = await _post(
        client, SAMPLES["topsort"], headers={"Origin": ROGUE, "Authorization": "Bearer ep_test_key_2"}
    )
    assert other.status == 204
    metrics = (await (await client.get("/metrics")).read()).decode()
    for source in expected_403:
        assert _metric(metrics, "eventpipe_receiver_rejections_total", source=source, reason="origin") == 1.0
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=3 * 3 + 1)
    assert len(records) == 3 * 3 + 1
    assert await record_count(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic) == 10


async def test_a_preflight_is_refused_only_where_its_query_names_the_tenant(start, directory) -> None:  # type: ignore[no-untyped-def]
    client = await start(_with_origins(directory, "shop-a", SHOP))
    token = mint_jwt("shop-a", jwt_secret())
    rr_query = {"apiKey": API_KEY, "partnerId": PARTNER_ID}
    named = [
        ("/1.0/view", rr_query, lambda body: body["error"]["code"] == "forbidden"),
        ("/upload/impression", {"token": token}, lambda body: body["errors"]["error"]["code"] == "forbidden"),
    ]
    for path, query, is_vendor_403 in named:
        refused = await client.options(path, params=query, headers=_preflight_headers(ROGUE, "content-type"))
        assert refused.status == 403, path
        assert is_vendor_403(await refused.json()), path
        assert "Access-Control-Allow-Origin" not in refused.headers  # the browser stops here
        allowed = await client.options(path, params=query, headers=_preflight_headers(SHOP, "content-type"))
        assert (allowed.status, allowed.headers["Access-Control-Allow-Origin"]) == (204, SHOP)
    # No tenant to ask: Topsort's key is in Authorization, which no preflight carries; a wrong key or
    # none names nobody. The request itself is then checked (403 above, 401 for the wrong key).
    unnamed = [
        ("/v2/events", {}),
        ("/1.0/view", {"apiKey": "ep_wrong_key", "partnerId": PARTNER_ID}),
        ("/upload/impression", {}),
    ]
    for path, query in unnamed:
        resp = await client.options(path, params=query, headers=_preflight_headers(ROGUE, "authorization"))
        assert (resp.status, resp.headers["Access-Control-Allow-Origin"]) == (204, ROGUE), path
    metrics = (await (await client.get("/metrics")).read()).decode()
    assert _metric(metrics, "eventpipe_receiver_requests_total", route="preflight", status="403") == 2.0
    assert (
        _metric(metrics, "eventpipe_receiver_rejections_total", source="retailrocket", reason="origin") == 1.0
    )


async def test_a_plain_options_without_origin_is_not_a_preflight(start) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    resp = await client.options("/v2/events")
    assert resp.status == 204
    assert set(_lower(resp.headers["Allow"])) == {"options", "post"}
    assert "Access-Control-Allow-Origin" not in resp.headers


PLAIN_TYPES = [
    "text/plain;charset=UTF-8",
    "text/plain",
    "text/plain; charset=utf-8",
    "Text/Plain;Charset=US-ASCII",
]


@pytest.mark.parametrize("source", ["topsort", "impression", "retailrocket"])
@pytest.mark.parametrize("content_type", PLAIN_TYPES)
async def test_a_text_plain_body_is_taken_as_json_with_the_same_reply_and_record(
    source: str, content_type: str, start, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    case = SAMPLES[source]
    as_json = await _post(client, case, headers={"Origin": SHOP})
    as_text = await _post(client, case, headers={"Origin": SHOP, "Content-Type": content_type})
    assert (as_text.status, await as_text.read()) == (as_json.status, await as_json.read())
    assert as_text.status == case.status
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=2)
    by_request = {RecordMeta.from_headers(r.headers).request_id: r for r in records}
    json_record = by_request[as_json.headers["X-Request-Id"]]
    text_record = by_request[as_text.headers["X-Request-Id"]]
    assert text_record.value == json_record.value == case.body
    json_meta, text_meta = (RecordMeta.from_headers(r.headers) for r in (json_record, text_record))
    assert (text_meta.source, text_meta.route, text_meta.tenant) == (
        json_meta.source,
        json_meta.route,
        json_meta.tenant,
    )
    assert [name for name, _ in text_record.headers] == [name for name, _ in json_record.headers]


@pytest.mark.parametrize("source", ["topsort", "impression"])
async def test_text_plain_is_still_validated_and_other_types_still_refused(
    source: str, start, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    case = SAMPLES[source]
    not_json = await _post(client, case, headers={"Content-Type": "text/plain"}, data=b"hello")
    assert not_json.status == 400
    latin = await _post(client, case, headers={"Content-Type": "text/plain; charset=iso-8859-1"})
    assert latin.status == 415
    form = await _post(client, case, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    body = json.dumps(await form.json())
    assert "text/plain" in body  # the message names what is accepted
    assert await record_count(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic) == 0


async def test_the_openapi_document_names_the_cors_behaviour(start) -> None:  # type: ignore[no-untyped-def]
    client = await start()
    doc = await (await client.get("/openapi.json")).json()
    for source, path in BROWSER_ROUTES:
        preflight = doc["paths"][path]["options"]
        assert set(preflight["responses"]["204"]["headers"]) >= {
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Headers",
            "Access-Control-Max-Age",
        }, path
        post = doc["paths"][path]["post"]
        assert "allowed_origins" in post["description"]
        assert all("Access-Control-Allow-Origin" in reply["headers"] for reply in post["responses"].values())
        assert "text/plain" in post["requestBody"]["content"], path
        # Only where the query carries credentials can a preflight be refused for its origin.
        assert ("403" in preflight["responses"]) is (source in cors.QUERY_CREDENTIAL_SOURCES)
    dfinery = doc["paths"]["/api/v1/events"]
    assert set(dfinery) == {"post"}
    assert "text/plain" not in dfinery["post"]["requestBody"]["content"]


async def test_allowed_origins_follow_a_tenants_reload(start, directory) -> None:  # type: ignore[no-untyped-def]
    """The origins are read from the tenants the receiver serves now: a reload (SIGHUP) changes them
    from the next request on, preflights included."""
    client = await start()
    case = SAMPLES["topsort"]
    assert (await _post(client, case, headers={"Origin": ROGUE})).status == case.status
    client.app[STATE].use_tenants(_with_origins(directory, "shop-a", SHOP))
    refused = await _post(client, case, headers={"Origin": ROGUE})
    assert (refused.status, refused.headers[cors.ERROR_HEADER]) == (403, cors.ORIGIN_REFUSED)
    query = {"apiKey": API_KEY, "partnerId": PARTNER_ID}
    preflight = await client.options(
        "/1.0/view", params=query, headers=_preflight_headers(ROGUE, "content-type")
    )
    assert preflight.status == 403
    assert (await _post(client, case, headers={"Origin": SHOP})).status == case.status
