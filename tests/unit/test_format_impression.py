"""The Impression API: the contract corpus, every enforced constraint, every error reply, the canonical
split with derived ids, and a property test that validate() never fails but with a 4xx Rejection."""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.formats.base import Problem, Rejection, Reply
from pipeline.formats.impression import FORMAT
from pipeline.record import RecordMeta
from tests.corpus import request_body, vendor_cases
from tests.format_checks import accepted_or_4xx, assert_reply_matches, json_nodes

RECEIVED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SKEW = 600.0
META = RecordMeta(
    source="impression",
    route="impression",
    tenant="shop-a",
    received_at_ms=int(RECEIVED_AT.timestamp() * 1000),
    request_id="req-1",
)
SCHEMA_PREFIX = "json not comply with schema: "


def reply_for(body: bytes) -> Reply:
    try:
        return FORMAT.validate(body, "impression", RECEIVED_AT, SKEW).reply
    except Rejection as rejection:
        return FORMAT.error(rejection)


CASES = vendor_cases("impression")
BODY_CASES = [pytest.param(c, id=c["id"]) for c in CASES if c["expect"]["status"] not in (401, 403)]
STORED_CASES = [pytest.param(c, id=c["id"]) for c in CASES if c["expect"]["status"] < 300]
SEED = next(c for c in CASES if c["id"] == "impression-seed-sample")["request"]["body"]


def test_corpus_has_impression_cases() -> None:
    assert len(BODY_CASES) >= 3


@pytest.mark.parametrize("case", BODY_CASES)
def test_corpus_reply(case: dict[str, Any]) -> None:
    reply = reply_for(request_body(case["request"]))
    assert_reply_matches(reply, case["expect"])
    if reply.status == 400:
        assert json.loads(reply.body)["errors"]["message"].startswith(SCHEMA_PREFIX)


def test_corpus_bad_signature_reply() -> None:
    """The receiver refuses the token; the body it answers with is error()'s, exactly as documented."""
    (case,) = [c for c in CASES if c["id"] == "impression-bad-signature"]
    reply = FORMAT.error(Rejection(Problem.INVALID_CREDENTIALS, "invalid signature"))
    assert_reply_matches(reply, case["expect"])


# --- every constraint: one accepted and one refused body each --------------------------------------

EVENT: dict[str, Any] = {"event_key": "imp", "target_id": "323333333"}


def body_with(**fields: Any) -> bytes:
    """One event: EVENT updated with fields; a value of ... removes the field."""
    event = {**EVENT, **fields}
    return json.dumps({"events": [{k: v for k, v in event.items() if v is not ...}]}).encode()


ACCEPTED = [
    pytest.param(body_with(), id="minimal"),
    *(
        pytest.param(body_with(event_key=key), id=f"event_key-{key}")
        for key in ["click", "addCart", "addWish", "order", "orderPay", "imp", "pageView"]
    ),
    pytest.param(body_with(target_id=1111), id="target_id-integer"),
    pytest.param(body_with(event_id="e-1"), id="event_id"),
    pytest.param(body_with(event_id=""), id="event_id-empty"),
    pytest.param(body_with(event_id=None), id="event_id-null"),
    pytest.param(body_with(user_id=None), id="user_id-null"),
    pytest.param(body_with(user_id=42, cookie_id=7), id="user-and-cookie-integers"),
    pytest.param(body_with(server_time=1583853406), id="server_time"),
    pytest.param(body_with(server_time=0), id="server_time-zero"),
    pytest.param(body_with(server_time=1893456000), id="server_time-future-is-the-consumers-call"),
    pytest.param(body_with(price=12.95, currency="USD"), id="price"),
    pytest.param(body_with(price="12.95"), id="price-numeric-string"),
    pytest.param(body_with(price=-3), id="price-negative"),
    pytest.param(body_with(item_count=0), id="item_count-zero"),
    pytest.param(body_with(algorithm="eda-v2"), id="algorithm"),
    pytest.param(body_with(site_id=1, section={"x": 1}, channel=["h5"]), id="attribute-fields-any-shape"),
    pytest.param(body_with(unknown_field={"a": [1, 2.5]}), id="unknown-field"),
    pytest.param(json.dumps({"events": [EVENT] * 1000}).encode(), id="1000-events"),
    pytest.param(json.dumps({"events": [EVENT], "extra": 1}).encode(), id="unknown-top-level-field"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_accepted(body: bytes) -> None:
    accepted = FORMAT.validate(body, "impression", RECEIVED_AT, SKEW)
    assert accepted.events == len(json.loads(body)["events"])
    assert accepted.reply.status == 200
    assert json.loads(accepted.reply.body) == {"status": "OK", "result": 1}


REFUSED = [
    pytest.param(b"{}", "$.events", id="events-missing"),
    pytest.param(b'{"events": []}', "$.events", id="events-empty"),
    pytest.param(b'{"events": {}}', "$.events", id="events-not-array"),
    pytest.param(b'{"events": ["imp"]}', "$.events[0]", id="event-not-object"),
    pytest.param(b"[]", "$", id="body-array"),
    pytest.param(body_with(event_key=...), "$.events[0].event_key", id="event_key-missing"),
    pytest.param(body_with(event_key="view"), "$.events[0].event_key", id="event_key-unknown"),
    pytest.param(body_with(event_key="IMP"), "$.events[0].event_key", id="event_key-case"),
    pytest.param(body_with(event_key=1), "$.events[0].event_key", id="event_key-number"),
    pytest.param(body_with(target_id=...), "$.events[0].target_id", id="target_id-missing"),
    pytest.param(body_with(target_id=""), "$.events[0].target_id", id="target_id-empty"),
    pytest.param(body_with(target_id=None), "$.events[0].target_id", id="target_id-null"),
    pytest.param(body_with(target_id=1.5), "$.events[0].target_id", id="target_id-fraction"),
    pytest.param(body_with(target_id=["1"]), "$.events[0].target_id", id="target_id-array"),
    pytest.param(body_with(event_id=5), "$.events[0].event_id", id="event_id-number"),
    pytest.param(body_with(user_id={"id": 1}), "$.events[0].user_id", id="user_id-object"),
    pytest.param(body_with(cookie_id=[1]), "$.events[0].cookie_id", id="cookie_id-array"),
    pytest.param(body_with(server_time="1583853406"), "$.events[0].server_time", id="server_time-string"),
    pytest.param(body_with(server_time=1583853406.5), "$.events[0].server_time", id="server_time-fraction"),
    pytest.param(body_with(server_time=-1), "$.events[0].server_time", id="server_time-negative"),
    pytest.param(body_with(server_time=1583853406000), "$.events[0].server_time", id="server_time-millis"),
    pytest.param(body_with(price="abc"), "$.events[0].price", id="price-text"),
    pytest.param(body_with(price="NaN"), "$.events[0].price", id="price-NaN"),
    pytest.param(body_with(price="-Infinity"), "$.events[0].price", id="price-infinity"),
    pytest.param(
        body_with(price=777).replace(b"777", b"1e400"), "$.events[0].price", id="price-beyond-double"
    ),
    pytest.param(body_with(price=True), "$.events[0].price", id="price-bool"),
    pytest.param(body_with(currency=840), "$.events[0].currency", id="currency-number"),
    pytest.param(body_with(item_count=-1), "$.events[0].item_count", id="item_count-negative"),
    pytest.param(body_with(item_count="2"), "$.events[0].item_count", id="item_count-string"),
    pytest.param(b"not json", None, id="not-json"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(b'{"events": [{"event_key": "imp", "target_id": "\xff"}]}', None, id="invalid-utf8"),
    pytest.param(b"[" * 10_000 + b"]" * 10_000, None, id="deep-nesting"),
]


@pytest.mark.parametrize(("body", "path"), REFUSED)
def test_refused(body: bytes, path: str | None) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(body, "impression", RECEIVED_AT, SKEW)
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    payload = json.loads(reply.body)
    assert set(payload) == {"errors"}
    assert payload["errors"]["error"] == {}
    assert payload["errors"]["message"].startswith(SCHEMA_PREFIX)
    if path is not None:
        assert caught.value.path == path
        assert f"`{path}`" in payload["errors"]["message"]


# --- the reply for every Problem -------------------------------------------------------------------

# status, and for non-400 replies error.name and error.code
EXPECTED_ERRORS: dict[Problem, tuple[int, str | None, str | None]] = {
    Problem.UNAUTHENTICATED: (401, "UnauthorizedError", "credentials_required"),
    Problem.INVALID_CREDENTIALS: (401, "UnauthorizedError", "invalid_token"),
    Problem.FORBIDDEN: (403, "ForbiddenError", "forbidden"),
    Problem.MALFORMED: (400, None, None),
    Problem.INVALID: (400, None, None),
    Problem.MISSING_FIELD: (400, None, None),
    Problem.EMPTY: (400, None, None),
    Problem.EVENT_TIME: (400, None, None),
    Problem.UNSUPPORTED_PROPERTY: (400, None, None),
    Problem.TOO_LARGE: (413, "PayloadTooLargeError", "entity_too_large"),
    Problem.UNSUPPORTED_MEDIA_TYPE: (415, "UnsupportedMediaTypeError", "unsupported_media_type"),
    Problem.TIMEOUT: (408, "RequestTimeoutError", "request_timeout"),
    Problem.RATE_LIMITED: (429, "TooManyRequestsError", "too_many_requests"),
    Problem.UNAVAILABLE: (503, "ServiceUnavailableError", "service_unavailable"),
    Problem.INTERNAL: (500, "InternalServerError", "internal_server_error"),
}


def test_every_problem_has_an_expectation() -> None:
    assert set(EXPECTED_ERRORS) == set(Problem)


@pytest.mark.parametrize("problem", list(Problem), ids=lambda p: p.value)
def test_error_reply(problem: Problem) -> None:
    secret = "Traceback (most recent call last) kafka-broker-1:9092"
    reply = FORMAT.error(Rejection(problem, f"detail {secret}", "$.events[0].target_id"))
    status, name, code = EXPECTED_ERRORS[problem]
    assert reply.status == status
    assert reply.content_type == "application/json"
    payload = json.loads(reply.body)
    assert set(payload) == {"errors"}
    assert set(payload["errors"]) == {"message", "error"}
    message, error = payload["errors"]["message"], payload["errors"]["error"]
    if status == 400:
        assert error == {}
        assert message.startswith(SCHEMA_PREFIX)
        assert "`$.events[0].target_id`" in message
    else:
        assert error == {"status": status, "name": name, "message": message, "code": code}
    if problem in (Problem.UNAUTHENTICATED, Problem.FORBIDDEN, Problem.INTERNAL, Problem.UNAVAILABLE):
        assert secret not in message


@pytest.mark.parametrize(
    ("problem", "message", "expected"),
    [
        pytest.param(Problem.INVALID_CREDENTIALS, "jwt expired", "jwt expired", id="jwt-expired"),
        pytest.param(Problem.INVALID_CREDENTIALS, "jwt malformed", "jwt malformed", id="jwt-malformed"),
        pytest.param(Problem.UNAUTHENTICATED, "no token", "No authorization token was found", id="no-token"),
    ],
)
def test_unauthorized_reply(problem: Problem, message: str, expected: str) -> None:
    reply = FORMAT.error(Rejection(problem, message))
    code = "invalid_token" if problem is Problem.INVALID_CREDENTIALS else "credentials_required"
    assert json.loads(reply.body) == {
        "errors": {
            "message": expected,
            "error": {"status": 401, "name": "UnauthorizedError", "message": expected, "code": code},
        }
    }


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
    assert FORMAT.source == "impression"
    assert [(r.path, r.name) for r in FORMAT.routes] == [("/upload/impression", "impression")]
    assert FORMAT.requires_json_content_type is True


# --- to_canonical ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", STORED_CASES)
def test_corpus_to_canonical(case: dict[str, Any]) -> None:
    body = request_body(case["request"])
    events = FORMAT.to_canonical(body, META)
    assert Counter(e.event_type for e in events) == Counter(case["stored"])
    assert len(events) == FORMAT.validate(body, "impression", RECEIVED_AT, SKEW).events
    for event in events:
        assert (event.tenant, event.source, event.received_at) == ("shop-a", "impression", RECEIVED_AT)
        assert event.occurred_at.utcoffset() == timedelta(0)
        assert uuid.UUID(event.event_id).version == 5
        assert not any(isinstance(x, float) for x in json_nodes(event.attributes))


def test_seed_canonical_columns() -> None:
    first, second = FORMAT.to_canonical(json.dumps(SEED).encode(), META)
    assert first.event_type == second.event_type == "impression"
    assert first.occurred_at == RECEIVED_AT  # no server_time: the time it was received
    assert first.user_id == "edacloud"
    assert first.anonymous_id == "3872edfe33432"
    assert first.product_id == "323333333"
    assert first.order_id is None
    assert first.attributes == {"section": "detail", "context": "132342342@12"}
    assert json.loads(first.raw) == SEED["events"][0]
    assert second.occurred_at == datetime(2020, 3, 10, 15, 16, 46, tzinfo=UTC)
    assert second.user_id is None
    assert second.anonymous_id == "1942234444"
    assert second.product_id == "1111"
    assert second.attributes is None
    assert first.event_id != second.event_id


@pytest.mark.parametrize(
    ("key", "event_type", "is_order"),
    [
        pytest.param("imp", "impression", False, id="imp"),
        pytest.param("click", "click", False, id="click"),
        pytest.param("addCart", "add_to_cart", False, id="addCart"),
        pytest.param("addWish", "add_to_wishlist", False, id="addWish"),
        pytest.param("order", "purchase", True, id="order"),
        pytest.param("orderPay", "order_paid", True, id="orderPay"),
        pytest.param("pageView", "page_view", False, id="pageView"),
    ],
)
def test_event_types(key: str, event_type: str, is_order: bool) -> None:
    (event,) = FORMAT.to_canonical(body_with(event_key=key, target_id=9001), META)
    assert event.event_type == event_type
    assert (event.order_id, event.product_id) == (("9001", None) if is_order else (None, "9001"))


def test_columns_and_attributes() -> None:
    body = body_with(
        event_key="order",
        event_id="ev-77",
        user_id=12,
        cookie_id="ck",
        server_time=1717243200,
        price=1999.99,
        currency="CNY",
        item_count=3,
        site_id=1,
        section="detail",
        context="ctx",
        algorithm="algo",
        page_id="p1",
        prev_page_id="p0",
        channel="h5",
        extra={"ratio": 0.25},
    )
    (event,) = FORMAT.to_canonical(body, META)
    assert event.event_id == "ev-77"
    assert event.occurred_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert (event.user_id, event.anonymous_id, event.order_id) == ("12", "ck", "323333333")
    assert event.price == Decimal("1999.99")
    assert isinstance(event.price, Decimal)
    assert (event.currency, event.quantity) == ("CNY", 3)
    assert event.attributes == {
        "site_id": 1,
        "section": "detail",
        "context": "ctx",
        "algorithm": "algo",
        "page_id": "p1",
        "prev_page_id": "p0",
        "channel": "h5",
        "extra": {"ratio": Decimal("0.25")},
    }


def test_price_string_is_exact() -> None:
    (event,) = FORMAT.to_canonical(body_with(price="0.1000000000000000055511151231257827"), META)
    assert event.price == Decimal("0.1000000000000000055511151231257827")


def test_raw_is_each_event_as_received() -> None:
    body = b'{"events": [ {"event_key":"imp",  "target_id":"a"} ,\n {"target_id": 5, "event_key": "click"} ]}'
    first, second = FORMAT.to_canonical(body, META)
    assert first.raw == b'{"event_key":"imp",  "target_id":"a"}'
    assert second.raw == b'{"target_id": 5, "event_key": "click"}'


def ids_of(body: bytes, tenant: str = "shop-a") -> list[str]:
    meta = RecordMeta("impression", "impression", tenant, META.received_at_ms, "req-2")
    return [e.event_id for e in FORMAT.to_canonical(body, meta)]


def test_derived_ids_are_stable() -> None:
    compact = json.dumps(SEED, separators=(",", ":")).encode()
    reordered = json.dumps(
        {"events": [dict(reversed(list(e.items()))) for e in SEED["events"]]}, indent=4
    ).encode()
    assert ids_of(compact) == ids_of(reordered) == ids_of(json.dumps(SEED).encode())
    assert ids_of(compact, "shop-b") != ids_of(compact)
    changed = copy.deepcopy(SEED)
    changed["events"][1]["server_time"] += 1
    assert ids_of(json.dumps(changed).encode())[1] != ids_of(compact)[1]
    assert ids_of(json.dumps(changed).encode())[0] == ids_of(compact)[0]


@pytest.mark.parametrize(
    ("event_id", "derived"),
    [
        pytest.param("vendor-id", False, id="given"),
        pytest.param("", True, id="empty"),
        pytest.param(None, True, id="null"),
        pytest.param(..., True, id="absent"),
    ],
)
def test_event_id(event_id: Any, derived: bool) -> None:
    (event,) = FORMAT.to_canonical(body_with(event_id=event_id), META)
    if derived:
        assert uuid.UUID(event.event_id).version == 5
    else:
        assert event.event_id == "vendor-id"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"garbage", id="not-json"),
        pytest.param(b'{"events": [{"target_id": "1"}]}', id="missing-event_key"),
        pytest.param(b'{"events": "x"}', id="not-array"),
        pytest.param(b'{"events": [{"event_key": "imp", "target_id": "1", "price": "NaN"}]}', id="nan-price"),
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
FIELD_NAMES = [
    "event_id", "site_id", "cookie_id", "user_id", "event_key", "target_id", "server_time", "section",
    "context", "algorithm", "page_id", "prev_page_id", "price", "currency", "item_count", "channel",
]  # fmt: skip


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    events = copy.deepcopy(SEED["events"])
    for _ in range(draw(st.integers(1, 4))):
        event = events[draw(st.integers(0, len(events) - 1))]
        field = draw(st.sampled_from(FIELD_NAMES))
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(json_values)
    return {"events": events}


def check_never_crashes(body: bytes) -> None:
    accepted_or_4xx(FORMAT, body, "impression", RECEIVED_AT, META, SKEW)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes(value: Any) -> None:
    check_never_crashes(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(mutated_events())
def test_mutated_seed_never_crashes(body: Any) -> None:
    check_never_crashes(json.dumps(body).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(body: bytes) -> None:
    check_never_crashes(body)
