"""What the vendors' own SDKs and samples send (tests/data/sdk_bodies): each body gets the reply the vendor
gives it, and each accepted one splits into canonical events whose columns hold the normalised values
(numbers as numbers, enum cases folded, unknown fields kept in attributes), while `raw` keeps the event
exactly as the SDK sent it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent
from pipeline.formats import all_formats
from pipeline.formats.base import Rejection, Reply
from pipeline.record import RecordMeta
from tests.sdk_bodies import SdkBody, load
from tests.vendor_replies import assert_vendor_reply

# After every body's own event time, so that none is in the future.
RECEIVED_AT = datetime(2024, 7, 12, tzinfo=UTC)
FORMATS = all_formats()
BODIES = load()
ACCEPTED = [pytest.param(b, id=b.id) for b in BODIES if b.accepted]
REFUSED = [pytest.param(b, id=b.id) for b in BODIES if not b.accepted]

# The canonical values a body file may expect, by name: how each is read off a CanonicalEvent.
VIEWS: dict[str, Callable[[CanonicalEvent], Any]] = {
    "event_type": lambda e: e.event_type,
    "event_id": lambda e: e.event_id,
    "product_id": lambda e: e.product_id,
    "vendor_id": lambda e: e.vendor_id,
    "order_id": lambda e: e.order_id,
    "user_id": lambda e: e.user_id,
    "quantity": lambda e: e.quantity,
    "search_query": lambda e: e.search_query,
    "price": lambda e: None if e.price is None else str(e.price),
    "occurred_at": lambda e: e.occurred_at.isoformat(),
    "items_unit_prices": lambda e: [str(item["unitPrice"]) for item in e.items or []],
    "item_serials": lambda e: [item.get("trade_in_serial_num") for item in e.items or []],
    "placement_path": lambda e: (e.placement or {}).get("path"),
    "placement_location": lambda e: (e.placement or {}).get("location"),
    "entity_type": lambda e: (e.attributes or {})["entity"]["type"],
    "attribute_keys": lambda e: sorted(e.attributes or {}),
}


def reply_for(sdk_body: SdkBody) -> Reply:
    fmt = FORMATS[sdk_body.vendor]
    try:
        return fmt.validate(sdk_body.body, sdk_body.route, RECEIVED_AT, 600).reply
    except Rejection as rejection:
        return fmt.error(rejection)


def canonical(sdk_body: SdkBody) -> list[CanonicalEvent]:
    meta = RecordMeta(
        source=sdk_body.vendor,
        route=sdk_body.route,
        tenant="shop-a",
        received_at_ms=int(RECEIVED_AT.timestamp() * 1000),
        request_id="req-1",
    )
    return FORMATS[sdk_body.vendor].to_canonical(sdk_body.body, meta)


def test_every_vendor_has_sdk_bodies_each_naming_its_source() -> None:
    assert {b.vendor for b in BODIES} == {"topsort", "retailrocket", "dfinery"}
    assert all(b.sdk.strip() for b in BODIES)
    assert ACCEPTED and REFUSED


@pytest.mark.parametrize("sdk_body", ACCEPTED)
def test_the_sdk_body_gets_the_vendors_success_reply(sdk_body: SdkBody) -> None:
    reply = reply_for(sdk_body)
    assert reply.status == sdk_body.expect["status"], reply.body
    assert_vendor_reply(sdk_body.vendor, reply.status, reply.headers, reply.body)
    if "result_code" in sdk_body.expect:
        assert json.loads(reply.body)["result_code"] == sdk_body.expect["result_code"]


@pytest.mark.parametrize("sdk_body", REFUSED)
def test_what_the_vendor_refuses_gets_its_exact_error(sdk_body: SdkBody) -> None:
    reply = reply_for(sdk_body)
    assert reply.status == sdk_body.expect["status"], reply.body
    assert_vendor_reply(sdk_body.vendor, reply.status, reply.headers, reply.body)
    error = json.loads(reply.body)
    if sdk_body.vendor == "topsort":
        assert error["errCode"] == sdk_body.expect["errCode"]
        assert error["message"].endswith(f"- at `{sdk_body.expect['path']}`"), error
    else:
        assert error["error"]["path"] == sdk_body.expect["path"], error


@pytest.mark.parametrize("sdk_body", ACCEPTED)
def test_the_stored_values_are_normalised(sdk_body: SdkBody) -> None:
    events = canonical(sdk_body)
    assert len(events) == len(sdk_body.canonical)
    for event, expected in zip(events, sdk_body.canonical, strict=True):
        assert {name: VIEWS[name](event) for name in expected} == expected


@pytest.mark.parametrize("sdk_body", ACCEPTED)
def test_raw_is_each_event_exactly_as_the_sdk_sent_it(sdk_body: SdkBody) -> None:
    for event in canonical(sdk_body):
        assert event.raw in sdk_body.body
        # decodes as sent: the normalised value lives in the columns only
        msgspec.json.decode(event.raw)


def test_numeric_string_prices_become_numbers_in_the_items_column() -> None:
    (purchase,) = canonical(next(b for b in BODIES if b.id == "analytics-js-purchase-string-prices"))
    sent = msgspec.json.decode(purchase.raw)["items"]
    assert all(isinstance(item["unitPrice"], str) for item in sent)
    assert all(not isinstance(item["unitPrice"], str) for item in purchase.items or [])
