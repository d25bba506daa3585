"""Every case of the vendor corpus through the receiver, against the real broker: status and reply
exactly as the vendor documents them; accepted requests land on Kafka byte for byte."""

from __future__ import annotations

import json

import pytest

from pipeline.record import RecordMeta
from tests.corpus import Case, load_cases, subset
from tests.kafka_util import read_all

pytestmark = pytest.mark.kafka

CASES = load_cases()


async def post(client, case: Case):  # type: ignore[no-untyped-def]
    return await client.request(
        case.method, case.path, params=case.query, headers=case.headers, data=case.body
    )


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_corpus_reply(case: Case, receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    resp = await post(client, case)
    text = await resp.read()
    assert resp.status == case.status, text
    if case.has_exact_body:
        if case.expect_body is None:
            assert text == b""
        else:
            assert json.loads(text) == case.expect_body
    if case.expect_body_has is not None:
        assert subset(case.expect_body_has, json.loads(text)), text
    assert resp.headers.get("X-Request-Id")


VENDOR_SAMPLES = {
    "topsort": "topsort-seed-all-four",
    "retailrocket": "retailrocket-visitorEvents",
    "dfinery": "dfinery-seed-purchase",
    "impression": "impression-seed-sample",
}


@pytest.mark.parametrize("vendor", list(VENDOR_SAMPLES))
async def test_record_on_kafka_byte_for_byte(vendor: str, receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    case = next(c for c in CASES if c.id == VENDOR_SAMPLES[vendor])
    client = await receiver_factory(kafka_settings)
    resp = await post(client, case)
    assert resp.status == case.status
    request_id = resp.headers["X-Request-Id"]
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=1)
    assert len(records) == 1
    record = records[0]
    assert record.value == case.body
    assert record.key is None
    meta = RecordMeta.from_headers(record.headers)
    assert [name for name, _ in record.headers] == [
        "source",
        "route",
        "tenant",
        "received_at",
        "request_id",
        "schema",
    ]
    assert meta.source == vendor
    assert meta.tenant == "shop-a"
    assert meta.request_id == request_id
    assert meta.route == case.path.rsplit("/", 1)[-1] if vendor == "retailrocket" else meta.route
    assert abs(meta.received_at_ms - record.timestamp) < 60_000


async def test_refused_requests_write_nothing(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    refused = [c for c in CASES if c.status >= 400]
    for case in refused:
        resp = await post(client, case)
        assert resp.status == case.status
    accepted = next(c for c in CASES if c.id == "topsort-spec-click")
    assert (await post(client, accepted)).status == 204
    records = await read_all(
        kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=2, deadline_s=5
    )
    assert [r.value for r in records] == [accepted.body]
