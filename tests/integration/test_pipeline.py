"""The whole pipeline, end to end, through the real broker into both sinks: every corpus case lands
as the rows it must, duplicates and redeliveries store nothing new, the window dead-letters late and
future events (measured against received_at), foreign records never block a partition, and two
consumers share the partitions."""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests import sdk_bodies
from tests.corpus import Case, distinct_instants, load_cases, restamp
from tests.integration.conftest import Pipeline, query, row_count
from tests.kafka_util import read_all
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

IDENTITY_KEYS = ("opaqueUserId", "sessionExternalId", "cookie_id", "user_id")


def personalize(case: Case, tag: str) -> Case:
    """The case with its identities and vendor event ids made unique to this run, so that cases that
    share the documents' sample ids do not deduplicate each other."""
    body = copy.deepcopy(case.body_json)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (key in IDENTITY_KEYS and isinstance(value, str)) or (
                    key == "id" and isinstance(value, str)
                ):
                    node[key] = f"{value}-{tag}"
                elif key == "event_id" and isinstance(value, str) and value:
                    node[key] = str(uuid.uuid5(uuid.NAMESPACE_URL, value + tag))
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(body)
    return Case(**{**case.__dict__, "body_json": body, "body": json.dumps(body, ensure_ascii=False).encode()})


def accepted_cases() -> list[Case]:
    return [c for c in load_cases() if 200 <= c.status < 300]


async def rows_for(sink: str, tag: str) -> list[tuple[Any, ...]]:
    return await query(
        sink,
        "SELECT event_type, event_id, tenant, occurred_at, product_id, order_id, price, quantity, user_id, attributes "
        "FROM events WHERE anonymous_id LIKE $1 OR user_id LIKE $1",
        f"%-{tag}",
    )


def as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def attributes(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


async def test_every_corpus_case_end_to_end(pipeline: Pipeline) -> None:
    await pipeline.start_consumer()
    cases = accepted_cases()
    instants = distinct_instants(datetime.now(UTC), len(cases), spacing_s=2)
    sent: list[tuple[Case, str, datetime]] = []
    for case, at in zip(cases, instants, strict=True):
        tag = uuid.uuid4().hex[:8]
        ready = personalize(restamp(case, at), tag)
        resp = await pipeline.post(ready)
        assert resp.status == case.status, await resp.text()
        if case.vendor == "dfinery":
            body = await resp.json()
            assert body["result_data"]["event_id"] == ready.body_json["event_attributes"]["event_id"]
        sent.append((ready, tag, at))
    total = sum(sum(c.stored.values()) for c in cases)
    sink = pipeline.settings.sink
    await wait_for(lambda: _count_is(sink, total), what=f"{total} rows")

    for case, tag, at in sent:
        rows = await rows_for(sink, tag)
        assert Counter(r[0] for r in rows) == Counter(case.stored), case.id
        for row in rows:
            assert row[2] == "shop-a"
            occurred = as_utc(row[3])
            # the Impression API event without server_time takes received_at, a moment after `at`
            assert at - timedelta(seconds=1) <= occurred <= datetime.now(UTC), (case.id, occurred)
    by_id = {case.id: (case, tag) for case, tag, _ in sent}

    # key columns against the request
    case, tag = by_id["retailrocket-order"]
    (row,) = await rows_for(sink, tag)
    assert (row[0], row[4], row[5], Decimal(str(row[6])), row[7]) == (
        "purchase",
        "123456",
        "135243",
        Decimal("234"),
        2,
    )

    case, tag = by_id["dfinery-seed-purchase"]
    (row,) = await rows_for(sink, tag)
    attrs = attributes(row[9])
    assert row[1] == case.body_json["event_attributes"]["event_id"]
    assert (row[5], Decimal(str(row[6])), row[8]) == ("123456789", Decimal("4000000.0"), f"user_0001-{tag}")
    assert attrs["abx:discount"] == 11.0
    assert attrs["c:source_type"] == "POS"
    assert attrs["c:user_name"] == "Hong Gildong"

    case, tag = by_id["topsort-spec-purchases"]
    purchases = {r[1]: r for r in await rows_for(sink, tag)}
    first = purchases[f"0e06c899-b2cd-4e0d-b0de-8aefb4b6d0a0-{tag}"]
    # 12.95 × 2 + 1.49 × 1, to the cent
    assert Decimal(str(first[6])) == Decimal("27.39")

    case, tag = by_id["impression-seed-sample"]
    products = sorted(r[4] for r in await rows_for(sink, tag))
    assert products == ["1111", "323333333"]


async def _count_is(sink: str, expected: int) -> bool:
    return await row_count(sink) == expected


async def test_same_request_twice_and_redelivery_store_once(pipeline: Pipeline) -> None:
    await pipeline.start_consumer()
    case = next(c for c in accepted_cases() if c.id == "retailrocket-visitorEvents")
    ready = personalize(restamp(case, datetime.now(UTC) - timedelta(minutes=1)), uuid.uuid4().hex[:8])
    for _ in range(2):
        assert (await pipeline.post(ready)).status == 200
    sink = pipeline.settings.sink
    expected = sum(case.stored.values())
    await wait_for(lambda: _consumer_saw(pipeline, 2 * expected), what="both requests consumed")
    assert await row_count(sink) == expected

    # A whole batch redelivered (a new group re-reads everything, as after a crash before commit).
    await pipeline.stop_consumers()
    await pipeline.start_consumer(group_id=f"{pipeline.settings.consumer_group}-again")
    await wait_for(lambda: _consumer_saw(pipeline, 2 * expected, index=0), what="redelivered batch consumed")
    assert await row_count(sink) == expected
    dup = pipeline.metrics[-1].consumer_events.labels("retailrocket", "duplicate")._value.get()
    assert dup == 2 * expected


async def _consumer_saw(pipeline: Pipeline, n: int, index: int = -1) -> bool:
    metrics = pipeline.metrics[-1]
    total = 0.0
    for metric in metrics.consumer_events.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total >= n


async def test_late_and_future_events_are_dead_lettered(pipeline: Pipeline) -> None:
    await pipeline.start_consumer()
    now = datetime.now(UTC)
    dfinery = next(c for c in accepted_cases() if c.id == "dfinery-seed-purchase")
    late = personalize(restamp(dfinery, now - timedelta(hours=49)), "late")
    future = personalize(restamp(dfinery, now + timedelta(hours=1)), "future")
    fresh = personalize(restamp(dfinery, now - timedelta(minutes=1)), "fresh")
    for case in (late, future, fresh):
        assert (await pipeline.post(case)).status == 200
    sink = pipeline.settings.sink
    await wait_for(lambda: _count_is(sink, 1), what="the fresh event")
    letters = await read_all(pipeline.settings.kafka_bootstrap, pipeline.settings.dlq_topic, expected=2)
    reasons = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        reasons[headers["event_id"]] = headers["reason"]
        assert headers["source"] == "dfinery"
        assert headers["tenant"] == "shop-a"
        assert json.loads(letter.value)["event_attributes"]["event_id"] == headers["event_id"]
    assert reasons == {
        late.body_json["event_attributes"]["event_id"]: "late",
        future.body_json["event_attributes"]["event_id"]: "future",
    }
    assert len(await rows_for(sink, "fresh")) == 1


async def test_window_uses_received_at_when_consumers_lag(pipeline: Pipeline) -> None:
    """Consumers stopped; an event received 8 s after it occurred, with a 10 s window; the consumers
    start only once the event is older than the window by the wall clock: it is still stored."""
    window_s = 10.0
    occurred = datetime.now(UTC) - timedelta(seconds=8)
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    case = personalize(restamp(click, occurred), "lag")
    assert (await pipeline.post(case)).status == 204

    async def window_has_passed() -> bool:
        return datetime.now(UTC) - occurred > timedelta(seconds=window_s + 1)

    await wait_for(window_has_passed, seconds=30, what="the window to pass")
    await pipeline.start_consumer(window_hours=window_s / 3600)
    await wait_for(lambda: _count_is(pipeline.settings.sink, 1), what="the lagged event")


async def test_foreign_record_is_dead_lettered_and_never_blocks(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.raw_topic, b"not from the receiver", partition=0)
        await producer.send_and_wait(
            settings.raw_topic,
            b"{}",
            partition=0,
            headers=[
                ("source", b"nobody"),
                ("route", b"x"),
                ("tenant", b"t"),
                ("received_at", b"1"),
                ("request_id", b"r"),
                ("schema", b"1"),
            ],
        )
    finally:
        await producer.stop()
    await pipeline.start_consumer()
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    assert (await pipeline.post(personalize(restamp(click, datetime.now(UTC)), "after"))).status == 204
    await wait_for(lambda: _count_is(settings.sink, 1), what="the valid event behind the foreign ones")
    letters = await read_all(settings.kafka_bootstrap, settings.dlq_topic, expected=2)
    assert sorted(dict(letter.headers)["reason"] for letter in letters) == [b"undecodable", b"undecodable"]
    assert b"not from the receiver" in [letter.value for letter in letters]


async def test_two_consumers_share_partitions_and_store_once(pipeline: Pipeline) -> None:
    first = await pipeline.start_consumer()
    second = await pipeline.start_consumer()

    async def both_assigned() -> bool:
        return bool(first._consumer.assignment()) and bool(second._consumer.assignment())

    await wait_for(both_assigned, what="both consumers to get partitions")
    assert not (first._consumer.assignment() & second._consumer.assignment())
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    now = datetime.now(UTC)
    for i in range(60):
        case = personalize(restamp(click, now - timedelta(seconds=i)), f"two{i}")
        assert (await pipeline.post(case)).status == 204
    await wait_for(lambda: _count_is(pipeline.settings.sink, 60), what="60 rows")
    assert first.batches_committed > 0
    assert second.batches_committed > 0


async def test_batches_are_bounded_by_bytes(pipeline: Pipeline) -> None:
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    now = datetime.now(UTC)
    cases = [personalize(restamp(click, now - timedelta(seconds=i)), f"bytes{i}") for i in range(40)]
    for case in cases:
        assert (await pipeline.post(case)).status == 204
    body_bytes = max(len(case.body) for case in cases)
    # Started after the records are in: without the byte bound one batch would take all 40.
    worker = await pipeline.start_consumer(batch_max_bytes=3 * body_bytes)
    await wait_for(lambda: _count_is(pipeline.settings.sink, 40), what="40 rows")
    # Three bodies' worth per batch, overshot by one record at most: four or five records each.
    assert worker.batches_committed >= 40 // 5


async def test_sdk_bodies_land_with_their_normalised_values(pipeline: Pipeline) -> None:
    """What the vendors' own SDKs send (tests/data/sdk_bodies), end to end: stored, with numeric-string
    prices as numbers, Kotlin's capitalised entity types folded, renders as their own event type."""
    await pipeline.start_consumer()
    accepted = [b for b in sdk_bodies.load() if b.accepted]
    instants = distinct_instants(datetime.now(UTC), len(accepted), spacing_s=2)
    for sdk_body, at in zip(accepted, instants, strict=True):
        body = sdk_bodies.restamped(sdk_body, at)
        resp = await pipeline.client.post(sdk_body.url(), headers=sdk_body.headers(), data=body)
        assert resp.status == sdk_body.expect["status"], (sdk_body.id, await resp.text())
    sink = pipeline.settings.sink
    total = sum(len(b.canonical) for b in accepted)
    await wait_for(lambda: _count_is(sink, total), what=f"{total} rows")

    rows = await query(
        sink, "SELECT event_type, event_id, price, quantity, user_id, items, attributes FROM events"
    )
    expected_types = Counter(e["event_type"] for b in accepted for e in b.canonical)
    assert Counter(r[0] for r in rows) == expected_types
    by_id = {r[1]: r for r in rows}

    purchase = by_id["3f0e5a9c-2b7d-4c1e-8a6f-9d0b1c2e3f4a"]  # analytics.js: unitPrice "2399", "299", "399"
    assert (Decimal(str(purchase[2])), purchase[3]) == (Decimal("4294"), 6)
    assert [item["unitPrice"] for item in json.loads(purchase[5])] == [2399, 299, 399]

    click = by_id["clk-2024-07-11-0002"]  # topsort.kt 1.1: entity type "Product"
    assert attributes(click[6])["entity"] == {"id": "p_Mfk11", "type": "product"}

    assert {r[1] for r in rows if r[0] == "render"} == {
        "9c8b7a6f-5e4d-4c3b-8a29-187f6e5d4c3b",
        "rnd-2024-07-11-0001",
    }
    assert {r[4] for r in rows if r[0] == "login"} == {"1234567"}  # DFINERY: a numeric user_id as text
    (basket,) = [r for r in rows if r[0] == "add_to_cart"]  # Retail Rocket's order sample on addToBasket
    assert {k: attributes(basket[6])[k] for k in ("price", "quantity", "transaction")} == {
        "price": 234,
        "quantity": 2,
        "transaction": "135243",
    }
