"""The receiver's limits, in each vendor's shape: compressed bodies, the size limit after
decompression (a zip bomb stops at it), content types, encodings, methods, slow clients."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest

from tests.corpus import load_cases
from tests.kafka_util import read_all

pytestmark = pytest.mark.kafka

CASES = {c.id: c for c in load_cases()}
CLICK = CASES["topsort-spec-click"]
DFINERY = CASES["dfinery-seed-purchase"]


async def test_gzip_and_deflate_bodies_are_accepted_and_stored_decompressed(
    receiver_factory, kafka_settings
) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    for encoding, data in (("gzip", gzip.compress(CLICK.body)), ("deflate", zlib.compress(CLICK.body))):
        headers = {**CLICK.headers, "Content-Encoding": encoding}
        resp = await client.post(CLICK.path, headers=headers, data=data)
        assert resp.status == 204, await resp.text()
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=2)
    assert [r.value for r in records] == [CLICK.body, CLICK.body]


async def test_zip_bomb_stops_at_the_limit(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=1024 * 1024))
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]")  # 200 MiB of JSON in ~200 KiB
    assert len(bomb) < 1024 * 1024
    resp = await client.post(CLICK.path, headers={**CLICK.headers, "Content-Encoding": "gzip"}, data=bomb)
    assert resp.status == 413
    assert (await resp.json())["errCode"] == "payload_too_large"


@pytest.mark.parametrize(
    ("case_id", "status", "check"),
    [
        pytest.param("topsort-spec-click", 413, lambda b: b["errCode"] == "payload_too_large", id="topsort"),
        pytest.param("dfinery-seed-purchase", 413, lambda b: b["result_code"] == 4002, id="dfinery"),
        pytest.param("impression-seed-sample", 413, lambda b: "errors" in b, id="impression"),
        pytest.param(
            "retailrocket-view", 413, lambda b: b["error"]["code"] == "too_large", id="retailrocket"
        ),
    ],
)
async def test_too_large_in_vendor_shape(case_id, status, check, receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    case = CASES[case_id]
    client = await receiver_factory(kafka_settings.replace(max_body_bytes=64))
    resp = await client.post(case.path, params=case.query, headers=case.headers, data=case.body)
    assert resp.status == status
    assert check(await resp.json())


async def test_json_content_type_required(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    headers = {**DFINERY.headers, "Content-Type": "text/plain"}
    resp = await client.post(DFINERY.path, headers=headers, data=DFINERY.body)
    assert resp.status == 415
    assert (await resp.json())["result_code"] == 4002


async def test_unknown_encoding_refused(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    resp = await client.post(
        CLICK.path, headers={**CLICK.headers, "Content-Encoding": "compress"}, data=CLICK.body
    )
    assert resp.status == 415


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"clicks": [{"id": "\xff\xfe"}]}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
        pytest.param(b'{"clicks": [{"id": 1e999999}]}', id="huge-number"),
        pytest.param(b'{"clicks": NaN}', id="nan"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_hostile_bodies_get_400_not_500(body: bytes, receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    resp = await client.post(CLICK.path, headers=CLICK.headers, data=body)
    assert resp.status == 400
    assert (await resp.json())["errCode"] in ("bad_request", "empty_request")


async def test_methods_and_paths(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    assert (await client.get("/v2/events")).status == 405
    assert (await client.put("/api/v1/events")).status == 405
    assert (await client.post("/v3/events")).status == 404
    unknown = await client.post("/1.0/nope", params=CASES["retailrocket-view"].query, data=b"{}")
    assert unknown.status == 404
    assert json.loads(await unknown.read())["error"]["message"]


async def test_slow_body_gets_408(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings.replace(request_read_timeout_seconds=0.5))
    stalled = asyncio.Event()

    async def slow_body():  # type: ignore[no-untyped-def]
        yield CLICK.body[:10]
        await stalled.wait()  # never set: the client stops sending mid-body
        yield CLICK.body[10:]

    resp = await client.post(CLICK.path, headers=CLICK.headers, data=slow_body())
    assert resp.status == 408
    assert (await resp.json())["errCode"] == "request_timeout"


async def test_health_and_openapi(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["kafka"] is True
    metrics = await (await client.get("/metrics")).text()
    assert "eventpipe_receiver_requests_total" in metrics or "eventpipe_ready" in metrics
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v2/events", "/events", "/api/v1/events", "/upload/impression", "/1.0/visitorEvents"} <= set(
        doc["paths"]
    )
