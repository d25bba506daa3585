"""Topsort events v2: the contract corpus, every enforced constraint, every error reply, the canonical
split, and a property test that validate() never fails in any other way than a 4xx Rejection."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.formats.base import Accepted, Problem, Rejection, Reply
from pipeline.formats.topsort import DOC_URL, FORMAT
from pipeline.record import RecordMeta
from tests.corpus import request_body, vendor_cases
from tests.format_checks import accepted_or_4xx, assert_reply_matches, json_nodes

RECEIVED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SKEW = 600.0
META = RecordMeta(
    source="topsort",
    route="events",
    tenant="shop-a",
    received_at_ms=int(RECEIVED_AT.timestamp() * 1000),
    request_id="req-1",
)


def reply_for(body: bytes, received_at: datetime = RECEIVED_AT) -> Reply:
    try:
        return FORMAT.validate(body, "events", received_at, SKEW).reply
    except Rejection as rejection:
        return FORMAT.error(rejection)


CASES = vendor_cases("topsort")
BODY_CASES = [pytest.param(c, id=c["id"]) for c in CASES if c["expect"]["status"] not in (401, 403)]
AUTH_CASES = [pytest.param(c, id=c["id"]) for c in CASES if c["expect"]["status"] in (401, 403)]
STORED_CASES = [pytest.param(c, id=c["id"]) for c in CASES if c["expect"]["status"] < 300]
SEED = next(c for c in CASES if c["id"] == "topsort-seed-all-four")["request"]["body"]


def test_corpus_has_topsort_cases() -> None:
    assert len(BODY_CASES) >= 10
    assert AUTH_CASES


@pytest.mark.parametrize("case", BODY_CASES)
def test_corpus_reply(case: dict[str, Any]) -> None:
    reply = reply_for(request_body(case["request"]))
    expect = case["expect"]
    assert_reply_matches(reply, expect)
    if "body" in expect and expect["body"] is None:
        assert reply.content_type is None
    if reply.status == 400:
        assert json.loads(reply.body)["docUrl"] == DOC_URL


@pytest.mark.parametrize("case", AUTH_CASES)
def test_corpus_auth_reply_shape(case: dict[str, Any]) -> None:
    """The receiver decides these from the headers; the reply it sends is shaped by error()."""
    has_key = "Authorization" in case["request"]["headers"]
    problem = Problem.INVALID_CREDENTIALS if has_key else Problem.UNAUTHENTICATED
    reply = FORMAT.error(Rejection(problem, "refused"))
    assert reply.status == case["expect"]["status"]
    assert json.loads(reply.body)["errCode"] == "unauthorized"


# --- every constraint: one accepted and one refused body each --------------------------------------

WHEN = "2024-06-01T06:59:00-05:00"
CLICK: dict[str, Any] = {
    "id": "c-1",
    "occurredAt": WHEN,
    "opaqueUserId": "u-1",
    "placement": {"path": "/categories/dairy"},
    "resolvedBidId": "bid-1",
}
PURCHASE: dict[str, Any] = {
    "id": "o-1",
    "occurredAt": WHEN,
    "opaqueUserId": "u-1",
    "items": [{"productId": "p-1", "unitPrice": 12.95, "quantity": 2}],
}
PAGEVIEW: dict[str, Any] = {
    "id": "pv-1",
    "occurredAt": WHEN,
    "opaqueUserId": "u-1",
    "page": {"type": "category", "pageId": "/categories/dairy", "value": "dairy"},
}

Mutation = Callable[[dict[str, Any]], Any]


def body_with(array: str, event: dict[str, Any], change: Mutation | None = None) -> bytes:
    event = copy.deepcopy(event)
    if change is not None:
        change(event)
    return json.dumps({array: [event]}).encode()


def put(path: str, value: Any) -> Mutation:
    """Set a dotted path (`placement.position`) in an event."""

    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = event
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def drop(path: str) -> Mutation:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = event
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return change


ACCEPTED = [
    pytest.param(body_with("impressions", CLICK, drop("placement")), id="impression-minimal"),
    pytest.param(body_with("clicks", CLICK), id="click"),
    pytest.param(
        body_with("clicks", CLICK, put("entity", {"id": "p1", "type": "product"})), id="entity-product"
    ),
    pytest.param(
        body_with("clicks", CLICK, put("entity", {"id": "v1", "type": "vendor"})), id="entity-vendor"
    ),
    pytest.param(
        body_with(
            "clicks",
            CLICK,
            put(
                "placement",
                {
                    "path": "/",
                    "position": 1,
                    "page": 1,
                    "pageSize": 1,
                    "productId": "p",
                    "categoryIds": ["c"],
                    "searchQuery": "q",
                },
            ),
        ),
        id="placement-full",
    ),
    pytest.param(
        body_with("clicks", CLICK, put("placement.categoryId", "9BLIe")), id="placement-legacy-categoryId"
    ),
    pytest.param(body_with("clicks", CLICK, put("placement.extra", {"x": 1})), id="placement-unknown-field"),
    pytest.param(body_with("clicks", CLICK, put("resolvedBidId", None)), id="resolvedBidId-null"),
    pytest.param(body_with("clicks", CLICK, put("placement", None)), id="placement-null"),
    pytest.param(body_with("clicks", CLICK, put("occurredAt", "2024-06-01T11:59:00Z")), id="occurredAt-Z"),
    pytest.param(
        body_with("clicks", CLICK, put("occurredAt", "2024-06-01T12:09:59Z")), id="occurredAt-within-skew"
    ),
    pytest.param(
        body_with("clicks", CLICK, put("occurredAt", "2001-01-01T00:00:00+09:00")), id="occurredAt-old"
    ),
    pytest.param(
        body_with("clicks", CLICK, put("additionalAttribution", {"id": "v1", "type": "vendor"})),
        id="additionalAttribution",
    ),
    pytest.param(
        body_with("clicks", CLICK, put("deviceType", "tablet")),
        id="unknown-deviceType-value-kept",
    ),
    pytest.param(body_with("clicks", CLICK, put("whatever", [1, {"a": None}])), id="unknown-field"),
    pytest.param(json.dumps({"clicks": [CLICK] * 50}).encode(), id="50-clicks"),
    pytest.param(json.dumps({"clicks": [CLICK], "impressions": []}).encode(), id="empty-array-beside-events"),
    pytest.param(body_with("purchases", PURCHASE), id="purchase"),
    pytest.param(body_with("purchases", PURCHASE, put("items.0.unitPrice", "2399")), id="unitPrice-string"),
    pytest.param(body_with("purchases", PURCHASE, put("items.0.unitPrice", 5)), id="unitPrice-integer"),
    pytest.param(body_with("purchases", PURCHASE, drop("items.0.quantity")), id="quantity-default"),
    pytest.param(body_with("purchases", PURCHASE, put("items.0.vendorId", "v1")), id="vendorId"),
    pytest.param(body_with("pageviews", PAGEVIEW), id="pageview"),
    pytest.param(
        body_with("pageviews", PAGEVIEW, put("page.value", ["coffee", "tea"])), id="page-value-list"
    ),
    pytest.param(body_with("pageviews", PAGEVIEW, drop("page.value")), id="page-value-absent"),
    pytest.param(body_with("pageviews", PAGEVIEW, put("page.type", "PDP")), id="page-type-PDP"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_accepted(body: bytes) -> None:
    accepted = FORMAT.validate(body, "events", RECEIVED_AT, SKEW)
    assert accepted == Accepted(events=accepted.events, reply=Reply(204, b"", content_type=None))
    assert accepted.events == sum(len(v) for v in json.loads(body).values() if isinstance(v, list))


def refused(
    body: bytes, path: str | None, err_code: str = "bad_request", *, id: str
) -> Any:  # pytest's ParameterSet
    return pytest.param(body, path, err_code, id=id)


REFUSED = [
    refused(body_with("clicks", CLICK, drop("id")), "$.clicks[0].id", id="id-missing"),
    refused(body_with("clicks", CLICK, put("id", "")), "$.clicks[0].id", id="id-empty"),
    refused(body_with("clicks", CLICK, put("id", 7)), "$.clicks[0].id", id="id-number"),
    refused(
        body_with("clicks", CLICK, drop("occurredAt")), "$.clicks[0].occurredAt", id="occurredAt-missing"
    ),
    refused(
        body_with("clicks", CLICK, put("occurredAt", "2024-06-01T06:59:00")),
        "$.clicks[0].occurredAt",
        id="occurredAt-without-offset",
    ),
    refused(
        body_with("clicks", CLICK, put("occurredAt", "yesterday")),
        "$.clicks[0].occurredAt",
        id="occurredAt-text",
    ),
    refused(
        body_with("clicks", CLICK, put("occurredAt", 1717243140)),
        "$.clicks[0].occurredAt",
        id="occurredAt-epoch",
    ),
    refused(
        body_with("clicks", CLICK, put("occurredAt", "0001-01-01T00:00:00+01:00")),
        "$.clicks[0].occurredAt",
        id="occurredAt-out-of-range",
    ),
    refused(
        body_with("clicks", CLICK, drop("opaqueUserId")),
        "$.clicks[0].opaqueUserId",
        id="opaqueUserId-missing",
    ),
    refused(
        body_with("clicks", CLICK, put("opaqueUserId", "")),
        "$.clicks[0].opaqueUserId",
        id="opaqueUserId-empty",
    ),
    refused(
        body_with("clicks", CLICK, put("resolvedBidId", 5)),
        "$.clicks[0].resolvedBidId",
        id="resolvedBidId-num",
    ),
    refused(
        body_with("clicks", CLICK, put("entity", {"id": "p1", "type": "category"})),
        "$.clicks[0].entity.type",
        id="entity-type-enum",
    ),
    refused(
        body_with("clicks", CLICK, put("entity", {"id": "p1"})),
        "$.clicks[0].entity.type",
        id="entity-type-missing",
    ),
    refused(
        body_with("clicks", CLICK, put("entity", {"id": "", "type": "product"})),
        "$.clicks[0].entity.id",
        id="entity-id",
    ),
    refused(body_with("clicks", CLICK, put("entity", "p1")), "$.clicks[0].entity", id="entity-not-object"),
    refused(
        body_with("clicks", CLICK, put("placement", {})),
        "$.clicks[0].placement.path",
        id="placement-path-missing",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.path", "")),
        "$.clicks[0].placement.path",
        id="placement-path-empty",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.position", 0)),
        "$.clicks[0].placement.position",
        id="position-zero",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.position", "1")),
        "$.clicks[0].placement.position",
        id="position-text",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.page", 0)), "$.clicks[0].placement.page", id="page-zero"
    ),
    refused(
        body_with("clicks", CLICK, put("placement.pageSize", 0)),
        "$.clicks[0].placement.pageSize",
        id="pageSize-0",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.productId", "")),
        "$.clicks[0].placement.productId",
        id="productId",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.categoryIds", [])),
        "$.clicks[0].placement.categoryIds",
        id="categoryIds-empty",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.categoryIds", [""])),
        "$.clicks[0].placement.categoryIds[0]",
        id="categoryIds-empty-id",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.categoryId", "")),
        "$.clicks[0].placement.categoryId",
        id="categoryId",
    ),
    refused(
        body_with("clicks", CLICK, put("placement.searchQuery", "")),
        "$.clicks[0].placement.searchQuery",
        id="searchQuery-empty",
    ),
    refused(
        body_with("clicks", CLICK, put("additionalAttribution", {"id": "v1", "type": "brand"})),
        "$.clicks[0].additionalAttribution.type",
        id="additionalAttribution-type",
    ),
    refused(
        body_with(
            "clicks",
            CLICK,
            lambda e: (e.pop("resolvedBidId"), e.update(additionalAttribution={"id": "v", "type": "vendor"})),
        ),
        "$.clicks[0].additionalAttribution",
        id="additionalAttribution-needs-resolvedBidId",
    ),
    refused(json.dumps({"impressions": [CLICK] * 51}).encode(), "$.impressions", id="51-impressions"),
    refused(json.dumps({"pageviews": [PAGEVIEW] * 51}).encode(), "$.pageviews", id="51-pageviews"),
    refused(json.dumps({"clicks": CLICK}).encode(), "$.clicks", id="clicks-not-array"),
    refused(json.dumps({"clicks": ["c-1"]}).encode(), "$.clicks[0]", id="click-not-object"),
    refused(body_with("purchases", PURCHASE, drop("items")), "$.purchases[0].items", id="items-missing"),
    refused(body_with("purchases", PURCHASE, put("items", [])), "$.purchases[0].items", id="items-empty"),
    refused(
        body_with("purchases", PURCHASE, drop("items.0.productId")),
        "$.purchases[0].items[0].productId",
        id="item-product",
    ),
    refused(
        body_with("purchases", PURCHASE, put("items.0.productId", "")),
        "$.purchases[0].items[0].productId",
        id="item-product-empty",
    ),
    refused(
        body_with("purchases", PURCHASE, drop("items.0.unitPrice")),
        "$.purchases[0].items[0].unitPrice",
        id="unitPrice-missing",
    ),
    *(
        refused(
            body_with("purchases", PURCHASE, put("items.0.unitPrice", value)),
            "$.purchases[0].items[0].unitPrice",
            id=f"unitPrice-{label}",
        )
        for label, value in [
            ("zero", 0),
            ("negative", -1.5),
            ("zero-string", "0.00"),
            ("text", "abc"),
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("beyond-double", "1e400"),
            ("below-double", "1e-400"),
            ("bool", True),
        ]
    ),
    refused(
        body_with("purchases", PURCHASE, put("items.0.unitPrice", 777)).replace(b"777", b"1e400"),
        "$.purchases[0].items[0].unitPrice",
        id="unitPrice-number-beyond-double",
    ),
    refused(
        body_with("purchases", PURCHASE, put("items.0.quantity", 0)),
        "$.purchases[0].items[0].quantity",
        id="quantity-0",
    ),
    refused(
        body_with("purchases", PURCHASE, put("items.0.quantity", 1.5)),
        "$.purchases[0].items[0].quantity",
        id="quantity-fraction",
    ),
    refused(
        body_with("purchases", PURCHASE, put("items.0.vendorId", "")),
        "$.purchases[0].items[0].vendorId",
        id="vendorId",
    ),
    refused(
        body_with("purchases", PURCHASE, drop("opaqueUserId")),
        "$.purchases[0].opaqueUserId",
        id="purchase-user",
    ),
    refused(body_with("pageviews", PAGEVIEW, drop("page")), "$.pageviews[0].page", id="page-missing"),
    refused(
        body_with("pageviews", PAGEVIEW, put("page.type", "product")),
        "$.pageviews[0].page.type",
        id="page-type",
    ),
    refused(
        body_with("pageviews", PAGEVIEW, drop("page.pageId")), "$.pageviews[0].page.pageId", id="page-pageId"
    ),
    refused(
        body_with("pageviews", PAGEVIEW, put("page.value", [])),
        "$.pageviews[0].page.value",
        id="page-value-empty",
    ),
    refused(body_with("pageviews", PAGEVIEW, drop("id")), "$.pageviews[0].id", id="pageview-id"),
    refused(b"{}", "$", "empty_request", id="empty-object"),
    refused(
        json.dumps({"clicks": [], "purchases": []}).encode(), "$", "empty_request", id="all-arrays-empty"
    ),
    refused(json.dumps({"clicks": None}).encode(), "$", "empty_request", id="array-null"),
    refused(
        body_with("clicks", CLICK, put("occurredAt", "2024-06-01T12:10:01Z")),
        "$.clicks[0].occurredAt",
        "invalid_event_time",
        id="occurredAt-future",
    ),
    refused(
        json.dumps(
            {"purchases": [PURCHASE, {**PURCHASE, "occurredAt": "2024-06-02T00:00:00+09:00"}]}
        ).encode(),
        "$.purchases[1].occurredAt",
        "invalid_event_time",
        id="second-purchase-future",
    ),
    refused(b"[]", "$", id="body-array"),
    refused(b"not json", None, id="not-json"),
    refused(b"", None, id="empty-body"),
    refused(b'{"clicks": [{"id": "\xff"}]}', None, id="invalid-utf8"),
    refused(b"[" * 10_000 + b"]" * 10_000, None, id="deep-nesting"),
]


@pytest.mark.parametrize(("body", "path", "err_code"), REFUSED)
def test_refused(body: bytes, path: str | None, err_code: str) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(body, "events", RECEIVED_AT, SKEW)
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    payload = json.loads(reply.body)
    assert payload["errCode"] == err_code
    assert payload["docUrl"] == DOC_URL
    if path is not None:
        assert caught.value.path == path
        assert f"`{path}`" in payload["message"]


# --- the reply for every Problem -------------------------------------------------------------------

EXPECTED_ERRORS = {
    Problem.UNAUTHENTICATED: (401, "unauthorized"),
    Problem.INVALID_CREDENTIALS: (401, "unauthorized"),
    Problem.FORBIDDEN: (403, "forbidden"),
    Problem.MALFORMED: (400, "bad_request"),
    Problem.INVALID: (400, "bad_request"),
    Problem.MISSING_FIELD: (400, "bad_request"),
    Problem.EMPTY: (400, "empty_request"),
    Problem.EVENT_TIME: (400, "invalid_event_time"),
    Problem.UNSUPPORTED_PROPERTY: (400, "bad_request"),
    Problem.TOO_LARGE: (413, "payload_too_large"),
    Problem.UNSUPPORTED_MEDIA_TYPE: (415, "unsupported_media_type"),
    Problem.TIMEOUT: (408, "request_timeout"),
    Problem.RATE_LIMITED: (429, "too_many_requests"),
    Problem.UNAVAILABLE: (503, "service_unavailable"),
    Problem.INTERNAL: (500, "internal_server_error"),
}


def test_every_problem_has_an_expectation() -> None:
    assert set(EXPECTED_ERRORS) == set(Problem)


@pytest.mark.parametrize("problem", list(Problem), ids=lambda p: p.value)
def test_error_reply(problem: Problem) -> None:
    secret = "ep_test_key_1 Traceback (most recent call last)"
    reply = FORMAT.error(Rejection(problem, f"detail {secret}", "$.clicks[0].id"))
    status, err_code = EXPECTED_ERRORS[problem]
    assert reply.status == status
    assert reply.content_type == "application/json"
    payload = json.loads(reply.body)
    assert set(payload) == {"errCode", "docUrl", "message"}
    assert payload["errCode"] == err_code
    assert payload["docUrl"] == DOC_URL
    assert payload["message"]
    if status == 400:
        assert "`$.clicks[0].id`" in payload["message"]
    if problem in (
        Problem.UNAUTHENTICATED,
        Problem.INVALID_CREDENTIALS,
        Problem.FORBIDDEN,
        Problem.INTERNAL,
        Problem.UNAVAILABLE,
    ):
        assert secret not in payload["message"]


@pytest.mark.parametrize(
    ("problem", "retry_after", "header"),
    [
        pytest.param(Problem.RATE_LIMITED, 7, "7", id="rate-limited"),
        pytest.param(Problem.RATE_LIMITED, None, "1", id="rate-limited-default"),
        pytest.param(Problem.UNAVAILABLE, 30, "30", id="unavailable"),
        pytest.param(Problem.UNAVAILABLE, None, None, id="unavailable-unset"),
        pytest.param(Problem.INVALID, None, None, id="invalid"),
    ],
)
def test_retry_after(problem: Problem, retry_after: int | None, header: str | None) -> None:
    reply = FORMAT.error(Rejection(problem, "x", retry_after=retry_after))
    assert reply.headers.get("Retry-After") == header


def test_format_declaration() -> None:
    assert FORMAT.source == "topsort"
    assert [(r.path, r.name) for r in FORMAT.routes] == [("/v2/events", "events"), ("/events", "events")]
    assert FORMAT.requires_json_content_type is True


# --- to_canonical ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", STORED_CASES)
def test_corpus_to_canonical(case: dict[str, Any]) -> None:
    body = request_body(case["request"])
    events = FORMAT.to_canonical(body, META)
    assert Counter(e.event_type for e in events) == Counter(case["stored"])
    assert len(events) == FORMAT.validate(body, "events", RECEIVED_AT, SKEW).events
    for event in events:
        assert (event.tenant, event.source, event.received_at) == ("shop-a", "topsort", RECEIVED_AT)
        assert event.occurred_at.utcoffset() == timedelta(0)
        assert event.event_id == json.loads(event.raw)["id"]
        for column in (event.placement, event.items, event.attributes):
            assert not any(isinstance(x, float) for x in json_nodes(column))


def by_type(body: Any) -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = {}
    for event in FORMAT.to_canonical(json.dumps(body).encode(), META):
        result.setdefault(event.event_type, []).append(event)
    return result


def test_seed_canonical_columns() -> None:
    events = by_type(SEED)
    (impression,) = events["impression"]
    assert impression.event_id == "eb874c98-bf4d-40a9-ae6d-fcf4cecb535c"
    assert impression.occurred_at == datetime(2019, 1, 1, 17, 59, 59, tzinfo=UTC)
    assert impression.occurred_at.tzinfo is UTC
    assert impression.anonymous_id == "71303ce0-de89-496d-8270-6434589615e8"
    assert impression.category_id == "9BLIe"
    assert impression.product_id is None
    assert impression.placement == SEED["impressions"][0]["placement"]
    assert impression.attributes == {
        "resolvedBidId": SEED["impressions"][0]["resolvedBidId"],
        "deviceType": "mobile",
        "channel": "onsite",
    }
    assert json.loads(impression.raw) == SEED["impressions"][0]

    (click,) = events["click"]
    assert click.occurred_at == datetime(2019, 1, 1, 18, 1, 42, tzinfo=UTC)
    assert click.attributes is not None
    assert click.attributes["channel"] == "offsite"

    first, second = events["purchase"]
    assert (first.event_id, first.order_id) == ("0e06c899-b2cd-4e0d-b0de-8aefb4b6d0a0",) * 2
    assert first.price == Decimal("27.39")
    assert isinstance(first.price, Decimal)
    assert first.quantity == 3
    assert first.product_ids == ["p_SA0238", "p_oajf2D"]
    assert first.vendor_id is None  # the second item names no vendor
    assert first.items == [
        {"productId": "p_SA0238", "unitPrice": Decimal("12.95"), "quantity": 2, "vendorId": "v_8fj2D"},
        {"productId": "p_oajf2D", "unitPrice": Decimal("1.49"), "quantity": 1},
    ]
    assert first.attributes == {"deviceType": "desktop", "channel": "onsite"}
    assert second.price == Decimal("599.75")
    assert second.quantity == 5
    assert second.vendor_id == "v_8fj2D"
    assert second.occurred_at == datetime(2019, 1, 1, 18, 59, 59, tzinfo=UTC)

    (pageview,) = events["page_view"]
    assert pageview.event_id == "8f648a8e-830c-4bb4-9d93-6ea80075ca82"
    assert pageview.attributes == {
        "page": {"type": "category", "pageId": "/categories/dairy", "value": "dairy"},
        "deviceType": "mobile",
        "channel": "onsite",
    }


@pytest.mark.parametrize(
    ("change", "columns"),
    [
        pytest.param(
            put("entity", {"id": "p9", "type": "product"}),
            {"product_id": "p9", "vendor_id": None},
            id="entity-product",
        ),
        pytest.param(
            put("entity", {"id": "v9", "type": "vendor"}),
            {"product_id": None, "vendor_id": "v9"},
            id="entity-vendor",
        ),
        pytest.param(put("placement.productId", "p7"), {"product_id": "p7"}, id="placement-productId"),
        pytest.param(
            lambda e: (
                put("placement.productId", "p7")(e),
                put("entity", {"id": "p9", "type": "product"})(e),
            ),
            {"product_id": "p9"},
            id="entity-wins-over-placement",
        ),
        pytest.param(
            put("placement.categoryIds", ["c1", "c2"]), {"category_id": "c1"}, id="categoryIds-first"
        ),
        pytest.param(put("placement.searchQuery", "yogurt"), {"search_query": "yogurt"}, id="searchQuery"),
        pytest.param(
            put("occurredAt", "2024-06-01T20:30:00+09:00"),
            {"occurred_at": datetime(2024, 6, 1, 11, 30, tzinfo=UTC)},
            id="occurredAt-to-utc",
        ),
    ],
)
def test_click_columns(change: Mutation, columns: dict[str, Any]) -> None:
    (event,) = FORMAT.to_canonical(body_with("clicks", CLICK, change), META)
    for name, value in columns.items():
        assert getattr(event, name) == value


def test_purchase_exact_money_from_strings() -> None:
    purchase = {
        **PURCHASE,
        "items": [
            {"productId": "a", "unitPrice": "2399", "quantity": 1},
            {"productId": "b", "unitPrice": 0.1, "quantity": 3, "vendorId": "v"},
            {"productId": "c", "unitPrice": "0.2", "vendorId": "v", "color": "red"},
        ],
    }
    (event,) = FORMAT.to_canonical(json.dumps({"purchases": [purchase]}).encode(), META)
    assert event.price == Decimal("2399.5")
    assert event.quantity == 5
    assert event.vendor_id is None
    assert event.items is not None
    assert event.items[0]["unitPrice"] == Decimal("2399")
    assert event.items[2] == {
        "productId": "c",
        "unitPrice": Decimal("0.2"),
        "quantity": 1,
        "vendorId": "v",
        "color": "red",
    }


def test_raw_is_each_event_as_received() -> None:
    body = (
        b'{ "clicks" : [ {"id":"a",  "occurredAt":"2024-06-01T10:00:00Z","opaqueUserId":"u"} ,\n'
        b'{"opaqueUserId":"u","id":"b","occurredAt":"2024-06-01T10:00:00Z", "x": 1.50} ] }'
    )
    first, second = FORMAT.to_canonical(body, META)
    assert first.raw == b'{"id":"a",  "occurredAt":"2024-06-01T10:00:00Z","opaqueUserId":"u"}'
    assert second.raw == b'{"opaqueUserId":"u","id":"b","occurredAt":"2024-06-01T10:00:00Z", "x": 1.50}'
    assert first.attributes is None
    assert second.attributes == {"x": Decimal("1.50")}


def test_event_ids_do_not_depend_on_formatting() -> None:
    compact = json.dumps({"clicks": [CLICK]}, separators=(",", ":")).encode()
    spaced = json.dumps({"clicks": [dict(reversed(list(CLICK.items())))]}, indent=3).encode()
    assert [e.event_id for e in FORMAT.to_canonical(compact, META)] == ["c-1"]
    assert [e.event_id for e in FORMAT.to_canonical(spaced, META)] == ["c-1"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"garbage", id="not-json"),
        pytest.param(b'{"clicks": [{"id": 1}]}', id="wrong-type"),
        pytest.param(b'{"clicks": {}}', id="not-array"),
        pytest.param(
            b'{"purchases": [{"id": "o", "occurredAt": "2024-06-01T10:00:00Z", "opaqueUserId": "u",'
            b' "items": [{"productId": "p", "unitPrice": "NaN"}]}]}',
            id="nan-price",
        ),
    ],
)
def test_to_canonical_undecodable(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        FORMAT.to_canonical(body, META)
    assert caught.value.reason == "undecodable"


# --- property: validate() accepts or refuses with a 4xx, never anything else -------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = sorted(
    {k for v in json_nodes(SEED) if isinstance(v, dict) for k in v} | {"entity", "categoryIds"}
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, (*prefix, index))
    return found


SEED_PATHS = paths_of(SEED)[1:]


@st.composite
def mutated_seed(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(SEED)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(SEED_PATHS))
        parent: Any = body
        try:
            for step in path[:-1]:
                parent = parent[step]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "delete":
                del parent[path[-1]]
            elif action == "add" and isinstance(parent[path[-1]], dict):
                parent[path[-1]][draw(st.sampled_from(FIELD_NAMES))] = draw(json_values)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
    return body


def check_never_crashes(body: bytes) -> None:
    accepted_or_4xx(FORMAT, body, "events", RECEIVED_AT, META, SKEW)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes(value: Any) -> None:
    check_never_crashes(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(mutated_seed())
def test_mutated_seed_never_crashes(body: Any) -> None:
    check_never_crashes(json.dumps(body).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(body: bytes) -> None:
    check_never_crashes(body)
