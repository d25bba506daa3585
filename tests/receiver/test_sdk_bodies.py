"""The vendors' own SDK bodies (tests/data/sdk_bodies) through the receiver, against the real broker:
each gets the reply the vendor gives it, in the vendor's shape, with the SDK's own URL (Retail Rocket's
samples start their query with `&`), and every accepted body lands on Kafka byte for byte."""

from __future__ import annotations

import json

import pytest

from pipeline.record import RecordMeta
from tests.kafka_util import read_all
from tests.sdk_bodies import SdkBody, load
from tests.vendor_replies import assert_vendor_reply

pytestmark = pytest.mark.kafka

BODIES = load()


async def post(client, sdk_body: SdkBody):  # type: ignore[no-untyped-def]
    return await client.post(sdk_body.url(), headers=sdk_body.headers(), data=sdk_body.body)


@pytest.mark.parametrize("sdk_body", [pytest.param(b, id=b.id) for b in BODIES])
async def test_sdk_body_reply(sdk_body: SdkBody, receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    resp = await post(client, sdk_body)
    text = await resp.read()
    assert resp.status == sdk_body.expect["status"], text
    assert_vendor_reply(sdk_body.vendor, resp.status, resp.headers, text)
    if not sdk_body.accepted and sdk_body.vendor == "retailrocket":
        assert json.loads(text)["error"]["path"] == sdk_body.expect["path"]


async def test_accepted_sdk_bodies_land_on_kafka_unchanged(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    client = await receiver_factory(kafka_settings)
    accepted = [b for b in BODIES if b.accepted]
    for sdk_body in BODIES:
        assert (await post(client, sdk_body)).status == sdk_body.expect["status"]
    records = await read_all(kafka_settings.kafka_bootstrap, kafka_settings.raw_topic, expected=len(accepted))
    landed = {(RecordMeta.from_headers(r.headers).route, r.value) for r in records}
    assert landed == {(b.route, b.body) for b in accepted}
