"""The Retail Rocket format: the contract corpus, every enforced constraint, every reply, canonical events,
and a property test that no body makes validate() fail any other way than with a 4xx Rejection."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.canonical import CanonicalEvent
from pipeline.errors import InvalidEvent
from pipeline.formats.base import Problem, Rejection, Reply, VendorFormat
from pipeline.formats.retailrocket import FORMAT, METHODS
from pipeline.record import RecordMeta
from tests import mutations
from tests.corpus import request_body, vendor_cases
from tests.format_checks import accepted_or_4xx, assert_reply_matches, encode_json

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RECEIVED_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
RECEIVED_AT = datetime.fromtimestamp(RECEIVED_MS / 1000, tz=UTC)
SEED_TIME = datetime(2018, 9, 15, 15, 53, tzinfo=UTC)
ROUTE_NAMES = {route.name for route in FORMAT.routes}

_typed: VendorFormat = FORMAT  # the module object satisfies the protocol (checked by mypy)


CASES = vendor_cases("retailrocket")


def _route(request: dict[str, Any]) -> str:
    return str(request["path"]).removeprefix("/1.0/")


def _auth_problem(request: dict[str, Any]) -> Problem | None:
    """The credential problem the receiver raises for a case, before any body is read."""
    query = request.get("query", {})
    if "apiKey" not in query or "partnerId" not in query:
        return Problem.MISSING_FIELD
    if query["apiKey"] != "${API_KEY}":
        return Problem.INVALID_CREDENTIALS
    if query["partnerId"] != "${PARTNER_ID}":
        return Problem.FORBIDDEN
    return None


BODY_CASES = [c for c in CASES if _route(c["request"]) in ROUTE_NAMES and _auth_problem(c["request"]) is None]
AUTH_CASES = [
    c for c in CASES if _route(c["request"]) in ROUTE_NAMES and _auth_problem(c["request"]) is not None
]
VALID_CASES = [c for c in BODY_CASES if c["expect"]["status"] == 200]


def _reply(body: bytes, route: str) -> Reply:
    try:
        return FORMAT.validate(body, route, NOW, 600).reply
    except Rejection as rejection:
        return FORMAT.error(rejection)


def _meta(route: str, tenant: str = "shop-a") -> RecordMeta:
    return RecordMeta(
        source="retailrocket", route=route, tenant=tenant, received_at_ms=RECEIVED_MS, request_id="req-1"
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------- corpus


def test_corpus_has_retailrocket_cases() -> None:
    assert len(BODY_CASES) >= 14
    assert AUTH_CASES


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in BODY_CASES])
def test_corpus_case_reply(case: dict[str, Any]) -> None:
    request = case["request"]
    assert_reply_matches(_reply(request_body(request), _route(request)), case["expect"])


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in AUTH_CASES])
def test_corpus_auth_case_reply_shape(case: dict[str, Any]) -> None:
    problem = _auth_problem(case["request"])
    assert problem is not None
    query = case["request"].get("query", {})
    missing = next((f"query.{name}" for name in ("apiKey", "partnerId") if name not in query), None)
    message = f"{missing.removeprefix('query.')} query parameter is required" if missing else "refused"
    reply = FORMAT.error(Rejection(problem, message, missing))
    assert_reply_matches(reply, case["expect"])


def test_corpus_unknown_method_is_not_a_route() -> None:
    unknown = [c for c in CASES if _route(c["request"]) not in ROUTE_NAMES]
    assert unknown, "the corpus pins the receiver's 404 for an unknown method"
    for case in unknown:
        assert case["expect"]["status"] == 404


def test_routes_cover_every_method_and_the_batch() -> None:
    assert [(r.path, r.name) for r in FORMAT.routes] == [
        (f"/1.0/{m}", m) for m in [*METHODS, "visitorEvents"]
    ]
    assert len(FORMAT.routes) == 16
    assert FORMAT.source == "retailrocket"
    assert FORMAT.requires_json_content_type is False


# ------------------------------------------------------------------------------------------ constraints

SESSION = "60842392e4881c65e6c5e423"
TS = "2018-09-15T15:53:00+00:00"
VALID: dict[str, dict[str, Any]] = {
    "view": {"sessionExternalId": SESSION, "productId": 123456, "stockId": "NewYork", "timestamp": TS},
    "groupView": {"sessionExternalId": SESSION, "groupId": 654321, "productIds": [1, 2], "timestamp": TS},
    "addToBasket": {"sessionExternalId": SESSION, "productId": 123456, "timestamp": TS},
    "categoryView": {"sessionExternalId": SESSION, "categoryId": 123456, "timestamp": TS},
    "categoryViewByCategoryPath": {"sessionExternalId": SESSION, "categoryPath": "Women/Clothing/Skirts"},
    "order": {
        "sessionExternalId": SESSION,
        "productId": 123456,
        "quantity": 2,
        "price": 234,
        "transaction": "135243",
        "timestamp": TS,
    },
    "search": {"sessionExternalId": SESSION, "searchPhrase": "подгузник", "timestamp": TS},
    "setContact": {"sessionExternalId": SESSION, "contactExternalId": "2342dfgf253454c645346wer3"},
    "welcomeSequence": {"sessionExternalId": SESSION, "email": "example@email.com"},
    "emailClick": {"sessionExternalId": SESSION},
    "recomBlockViewed": {"sessionExternalId": SESSION, "recomBlockId": "34453dffg34534te565"},
    "recomTap": {"sessionExternalId": SESSION, "recomBlockId": "b1", "productId": 123},
    "recomAddToBasket": {"sessionExternalId": SESSION, "recomBlockId": "b1", "productId": 123},
    "impressionContentViewed": {"sessionExternalId": SESSION, "impressionContentId": "568da4f6"},
    "impressionContentClicked": {"sessionExternalId": SESSION, "impressionContentId": "568da4f6"},
}


def _with(method: str, **changes: Any) -> dict[str, Any]:
    body = dict(VALID[method])
    for name, value in changes.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return body


DROP = object()

ACCEPTED = [
    *(pytest.param(m, VALID[m], id=f"{m}-minimal") for m in METHODS),
    pytest.param("view", _with("view", timestamp=DROP), id="timestamp-absent"),
    pytest.param("view", _with("view", timestamp=None), id="timestamp-null"),
    pytest.param("view", _with("view", timestamp="2018-09-15T15:53:00"), id="timestamp-no-offset"),
    pytest.param("view", _with("view", timestamp="2018-09-15T15:53:00Z"), id="timestamp-z"),
    pytest.param("view", _with("view", timestamp="2018-09-15T18:53:00.123+03:00"), id="timestamp-offset"),
    pytest.param(
        "view", _with("view", sessionExternalId="0b0e5d1e-3b7c-4d3e-9a3f-7a8f1c2d3e4f"), id="session-guid"
    ),
    pytest.param("view", _with("view", sessionExternalId="s" * 50), id="session-50-chars"),
    pytest.param("view", _with("view", stockId=15), id="stockId-number"),
    pytest.param("view", _with("view", stockId=DROP), id="stockId-absent"),
    pytest.param("view", _with("view", brand="Acme", extra={"a": [1, 2.5]}), id="unknown-fields-kept"),
    pytest.param("groupView", _with("groupView", productIds=[]), id="productIds-empty"),
    pytest.param("order", _with("order", transaction=135243), id="transaction-number"),
    pytest.param("order", _with("order", price="1321.43"), id="price-numeric-string"),
    pytest.param("order", _with("order", price=1321.43), id="price-float"),
    pytest.param("order", _with("order", price=0), id="price-zero"),
    pytest.param("order", _with("order", quantity=1), id="quantity-one"),
    pytest.param("setContact", _with("setContact", contactExternalId="абв123"), id="contact-unicode-letters"),
    pytest.param("setContact", _with("setContact", contactExternalId="c" * 50), id="contact-50-chars"),
    pytest.param(
        "setContact",
        _with("setContact", email="a@b.c", phone="+7 916 000-00-00", customData={"tier": "gold"}),
        id="contact-optional-fields",
    ),
    pytest.param("setContact", _with("setContact", phone=79160000000), id="phone-number"),
    pytest.param("setContact", _with("setContact", customData="plain"), id="customData-string"),
    pytest.param("recomBlockViewed", _with("recomBlockViewed", recomBlockId="r" * 50), id="recomBlockId-50"),
]


@pytest.mark.parametrize(("method", "body"), ACCEPTED)
def test_valid_body_is_accepted(method: str, body: dict[str, Any]) -> None:
    accepted = FORMAT.validate(_dumps(body), method, NOW, 600)
    assert accepted.events == 1
    assert accepted.reply == Reply(status=200, body=b"", content_type=None)


REJECTED = [
    pytest.param("view", _with("view", sessionExternalId=DROP), Problem.MISSING_FIELD, "$.sessionExternalId"),
    pytest.param("view", _with("view", sessionExternalId=""), Problem.INVALID, "$.sessionExternalId"),
    pytest.param("view", _with("view", sessionExternalId="s" * 51), Problem.INVALID, "$.sessionExternalId"),
    pytest.param("view", _with("view", sessionExternalId=42), Problem.INVALID, "$.sessionExternalId"),
    pytest.param("view", _with("view", productId=DROP), Problem.MISSING_FIELD, "$.productId"),
    pytest.param("view", _with("view", productId="123456"), Problem.INVALID, "$.productId"),
    pytest.param("view", _with("view", productId=1.5), Problem.INVALID, "$.productId"),
    pytest.param("view", _with("view", productId=None), Problem.INVALID, "$.productId"),
    pytest.param("view", _with("view", timestamp="15.09.2018"), Problem.EVENT_TIME, "$.timestamp"),
    pytest.param("view", _with("view", timestamp=1537026780), Problem.EVENT_TIME, "$.timestamp"),
    pytest.param(
        "view", _with("view", timestamp="0001-01-01T00:00:00+05:00"), Problem.EVENT_TIME, "$.timestamp"
    ),
    pytest.param("view", _with("view", stockId={"id": 1}), Problem.INVALID, "$.stockId"),
    pytest.param("groupView", _with("groupView", groupId=DROP), Problem.MISSING_FIELD, "$.groupId"),
    pytest.param("groupView", _with("groupView", productIds=DROP), Problem.MISSING_FIELD, "$.productIds"),
    pytest.param("groupView", _with("groupView", productIds="1,2"), Problem.INVALID, "$.productIds"),
    pytest.param("groupView", _with("groupView", productIds=[1, "b"]), Problem.INVALID, "$.productIds[1]"),
    pytest.param("addToBasket", _with("addToBasket", productId=DROP), Problem.MISSING_FIELD, "$.productId"),
    pytest.param(
        "categoryView", _with("categoryView", categoryId=DROP), Problem.MISSING_FIELD, "$.categoryId"
    ),
    pytest.param("categoryView", _with("categoryView", categoryId="shoes"), Problem.INVALID, "$.categoryId"),
    pytest.param(
        "categoryViewByCategoryPath",
        _with("categoryViewByCategoryPath", categoryPath=DROP),
        Problem.MISSING_FIELD,
        "$.categoryPath",
    ),
    pytest.param(
        "categoryViewByCategoryPath",
        _with("categoryViewByCategoryPath", categoryPath=""),
        Problem.INVALID,
        "$.categoryPath",
    ),
    pytest.param("order", _with("order", price=DROP), Problem.MISSING_FIELD, "$.price"),
    pytest.param("order", _with("order", price="12,50"), Problem.INVALID, "$.price"),
    pytest.param("order", _with("order", price="NaN"), Problem.INVALID, "$.price"),
    pytest.param("order", _with("order", price="Infinity"), Problem.INVALID, "$.price"),
    pytest.param("order", _with("order", price="1e999999"), Problem.INVALID, "$.price"),
    pytest.param("order", _with("order", price=True), Problem.INVALID, "$.price"),
    pytest.param("order", _with("order", quantity=DROP), Problem.MISSING_FIELD, "$.quantity"),
    pytest.param("order", _with("order", quantity=0), Problem.INVALID, "$.quantity"),
    pytest.param("order", _with("order", quantity=1.5), Problem.INVALID, "$.quantity"),
    pytest.param("order", _with("order", quantity=2**63), Problem.INVALID, "$.quantity"),
    pytest.param("order", _with("order", transaction=DROP), Problem.MISSING_FIELD, "$.transaction"),
    pytest.param("order", _with("order", transaction=""), Problem.INVALID, "$.transaction"),
    pytest.param("order", _with("order", transaction=["1"]), Problem.INVALID, "$.transaction"),
    pytest.param("search", _with("search", searchPhrase=DROP), Problem.MISSING_FIELD, "$.searchPhrase"),
    pytest.param("search", _with("search", searchPhrase=""), Problem.INVALID, "$.searchPhrase"),
    pytest.param(
        "setContact",
        _with("setContact", contactExternalId=DROP),
        Problem.MISSING_FIELD,
        "$.contactExternalId",
    ),
    pytest.param(
        "setContact", _with("setContact", contactExternalId="a-b"), Problem.INVALID, "$.contactExternalId"
    ),
    pytest.param(
        "setContact", _with("setContact", contactExternalId="a_b"), Problem.INVALID, "$.contactExternalId"
    ),
    pytest.param(
        "setContact", _with("setContact", contactExternalId="ab\n"), Problem.INVALID, "$.contactExternalId"
    ),
    pytest.param(
        "setContact", _with("setContact", contactExternalId=""), Problem.INVALID, "$.contactExternalId"
    ),
    pytest.param(
        "setContact", _with("setContact", contactExternalId="c" * 51), Problem.INVALID, "$.contactExternalId"
    ),
    pytest.param("setContact", _with("setContact", email=12345), Problem.INVALID, "$.email"),
    pytest.param("setContact", _with("setContact", phone=[1]), Problem.INVALID, "$.phone"),
    pytest.param("welcomeSequence", _with("welcomeSequence", email=DROP), Problem.MISSING_FIELD, "$.email"),
    pytest.param("welcomeSequence", _with("welcomeSequence", email=""), Problem.INVALID, "$.email"),
    pytest.param(
        "emailClick",
        _with("emailClick", sessionExternalId=DROP),
        Problem.MISSING_FIELD,
        "$.sessionExternalId",
    ),
    pytest.param(
        "recomBlockViewed",
        _with("recomBlockViewed", recomBlockId=DROP),
        Problem.MISSING_FIELD,
        "$.recomBlockId",
    ),
    pytest.param(
        "recomBlockViewed",
        _with("recomBlockViewed", recomBlockId="r" * 51),
        Problem.INVALID,
        "$.recomBlockId",
    ),
    pytest.param("recomTap", _with("recomTap", recomBlockId=DROP), Problem.MISSING_FIELD, "$.recomBlockId"),
    pytest.param("recomTap", _with("recomTap", productId=DROP), Problem.MISSING_FIELD, "$.productId"),
    pytest.param(
        "recomAddToBasket", _with("recomAddToBasket", recomBlockId=""), Problem.INVALID, "$.recomBlockId"
    ),
    pytest.param(
        "recomAddToBasket", _with("recomAddToBasket", productId=DROP), Problem.MISSING_FIELD, "$.productId"
    ),
    pytest.param(
        "impressionContentViewed",
        _with("impressionContentViewed", impressionContentId=DROP),
        Problem.MISSING_FIELD,
        "$.impressionContentId",
    ),
    pytest.param(
        "impressionContentClicked",
        _with("impressionContentClicked", impressionContentId=7),
        Problem.INVALID,
        "$.impressionContentId",
    ),
    pytest.param("view", [VALID["view"]], Problem.INVALID, "$", id="view-array-not-object"),
]


@pytest.mark.parametrize(("method", "body", "problem", "path"), REJECTED)
def test_invalid_body_is_refused_naming_the_field(
    method: str, body: Any, problem: Problem, path: str
) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(_dumps(body), method, NOW, 600)
    assert caught.value.problem is problem
    assert caught.value.path == path
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    error = json.loads(reply.body)["error"]
    assert error["path"] == path
    assert error["code"] == problem.value


def _envelopes(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{method: event} for method, event in pairs]


ALL_ENVELOPES = _envelopes(*((m, VALID[m]) for m in METHODS))
BAD_ORDER = _with("order", price="twelve")

BATCH_REJECTED = [
    pytest.param(b"[]", Problem.EMPTY, "$", id="empty-array"),
    pytest.param(_dumps(VALID["view"]), Problem.INVALID, "$", id="object-not-array"),
    pytest.param(_dumps([{}]), Problem.INVALID, "$[0]", id="zero-keys"),
    pytest.param(
        _dumps([*ALL_ENVELOPES[:1], {"view": VALID["view"], "order": VALID["order"]}]),
        Problem.INVALID,
        "$[1]",
        id="two-keys",
    ),
    pytest.param(_dumps([{"viewProduct": VALID["view"]}]), Problem.INVALID, "$[0]", id="unknown-key"),
    pytest.param(_dumps([{"visitorEvents": []}]), Problem.INVALID, "$[0]", id="nested-batch-key"),
    pytest.param(
        _dumps([*ALL_ENVELOPES[:3], {"order": BAD_ORDER}]), Problem.INVALID, "$[3].order.price", id="inner"
    ),
    pytest.param(_dumps([{"view": None}]), Problem.INVALID, "$[0].view", id="null-event"),
    pytest.param(_dumps([VALID["view"]]), Problem.INVALID, "$[0]", id="bare-event-without-envelope"),
    pytest.param(_dumps([1]), Problem.INVALID, "$[0]", id="number-element"),
    pytest.param(
        _dumps([{"view": _with("view", timestamp="soon")}]),
        Problem.EVENT_TIME,
        "$[0].view.timestamp",
        id="time",
    ),
    pytest.param(
        _dumps([{"setContact": _with("setContact", sessionExternalId=DROP)}]),
        Problem.MISSING_FIELD,
        "$[0].setContact.sessionExternalId",
        id="inner-missing",
    ),
]


@pytest.mark.parametrize(("body", "problem", "path"), BATCH_REJECTED)
def test_visitor_events_refusals_name_the_index(body: bytes, problem: Problem, path: str) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(body, "visitorEvents", NOW, 600)
    assert (caught.value.problem, caught.value.path) == (problem, path)
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    assert json.loads(reply.body)["error"]["path"] == path


def test_visitor_events_counts_envelopes_of_every_method() -> None:
    accepted = FORMAT.validate(_dumps(ALL_ENVELOPES), "visitorEvents", NOW, 600)
    assert accepted.events == len(METHODS) == 15


def test_route_may_be_given_by_path() -> None:
    assert FORMAT.validate(_dumps(VALID["view"]), "/1.0/view", NOW, 600).events == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b"sessionExternalId=1&productId=2", Problem.MALFORMED, id="form-encoded"),
        pytest.param(b"", Problem.MALFORMED, id="empty-body"),
        pytest.param(b'{"sessionExternalId": "\xff", "productId": 1}', Problem.MALFORMED, id="invalid-utf8"),
        pytest.param(b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}", Problem.MALFORMED, id="deep-nesting"),
    ],
)
def test_unreadable_body_is_malformed(body: bytes, problem: Problem) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(body, "view", NOW, 600)
    assert caught.value.problem is problem
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    assert json.loads(reply.body)["error"]["path"] == "$"


# ---------------------------------------------------------------------------------------------- replies

EXPECTED_STATUS = {
    Problem.UNAUTHENTICATED: 401,
    Problem.INVALID_CREDENTIALS: 401,
    Problem.FORBIDDEN: 403,
    Problem.MALFORMED: 400,
    Problem.INVALID: 400,
    Problem.MISSING_FIELD: 400,
    Problem.EMPTY: 400,
    Problem.EVENT_TIME: 400,
    Problem.UNSUPPORTED_PROPERTY: 400,
    Problem.TOO_LARGE: 413,
    Problem.UNSUPPORTED_MEDIA_TYPE: 415,
    Problem.TIMEOUT: 408,
    Problem.RATE_LIMITED: 429,
    Problem.UNAVAILABLE: 503,
    Problem.INTERNAL: 500,
}


def test_every_problem_has_an_expected_status() -> None:
    assert set(EXPECTED_STATUS) == set(Problem)


@pytest.mark.parametrize("problem", [pytest.param(p, id=p.value) for p in Problem])
def test_error_reply_for_every_problem(problem: Problem) -> None:
    retry_after = 7 if problem in (Problem.RATE_LIMITED, Problem.UNAVAILABLE) else None
    reply = FORMAT.error(Rejection(problem, "details", "$.productId", retry_after=retry_after))
    assert reply.status == EXPECTED_STATUS[problem]
    assert reply.content_type == "application/json"
    error = json.loads(reply.body)["error"]
    assert set(error) == {"code", "message", "path"}
    assert error["code"] == problem.value
    assert error["path"] == "$.productId"
    if retry_after is None:
        assert "Retry-After" not in reply.headers
    else:
        assert reply.headers["Retry-After"] == "7"


@pytest.mark.parametrize("problem", [Problem.UNAUTHENTICATED, Problem.INVALID_CREDENTIALS, Problem.FORBIDDEN])
def test_auth_replies_never_echo_the_key(problem: Problem) -> None:
    reply = FORMAT.error(Rejection(problem, "apiKey ep_wrong_key is unknown"))
    assert b"ep_wrong_key" not in reply.body
    assert "apiKey" in json.loads(reply.body)["error"]["message"]


# -------------------------------------------------------------------------------------------- canonical


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in VALID_CASES])
def test_corpus_body_splits_into_the_stored_events(case: dict[str, Any]) -> None:
    request = case["request"]
    route = _route(request)
    body = request_body(request)
    events = FORMAT.to_canonical(body, _meta(route))
    assert len(events) == FORMAT.validate(body, route, NOW, 600).events
    assert Counter(e.event_type for e in events) == Counter(case["stored"])
    sent = request["body"] if isinstance(request["body"], list) else [{route: request["body"]}]
    for event, envelope in zip(events, sent, strict=True):
        ((_, original),) = envelope.items()
        assert json.loads(event.raw) == original
        assert (event.tenant, event.source, event.received_at) == ("shop-a", "retailrocket", RECEIVED_AT)
        assert event.anonymous_id == original["sessionExternalId"]
        assert event.occurred_at == SEED_TIME
        assert event.occurred_at.utcoffset() is not None


def _one(method: str, body: dict[str, Any]) -> CanonicalEvent:
    (event,) = FORMAT.to_canonical(_dumps(body), _meta(method))
    return event


def test_view_columns() -> None:
    event = _one("view", VALID["view"])
    assert event.event_type == "product_view"
    assert event.product_id == "123456"
    assert event.attributes == {"stockId": "NewYork"}
    assert event.raw == _dumps(VALID["view"])


def test_order_columns_are_exact() -> None:
    event = _one("order", _with("order", price=1321.43, quantity=3, transaction=135243))
    assert event.event_type == "purchase"
    assert event.price == Decimal("1321.43")
    assert isinstance(event.price, Decimal)
    assert type(event.price) is Decimal
    assert (event.order_id, event.quantity, event.product_id) == ("135243", 3, "123456")


def test_order_price_from_numeric_string() -> None:
    assert _one("order", _with("order", price="0.10")).price == Decimal("0.10")


def test_group_view_columns() -> None:
    event = _one("groupView", VALID["groupView"])
    assert event.product_ids == ["1", "2"]
    assert event.attributes == {"groupId": 654321}


def test_category_columns() -> None:
    assert _one("categoryView", VALID["categoryView"]).category_id == "123456"
    by_path = _one("categoryViewByCategoryPath", VALID["categoryViewByCategoryPath"])
    assert (by_path.event_type, by_path.category_id) == ("category_view", None)
    assert by_path.attributes == {"categoryPath": "Women/Clothing/Skirts"}


def test_search_and_recommendation_columns() -> None:
    assert _one("search", VALID["search"]).search_query == "подгузник"
    tap = _one("recomTap", VALID["recomTap"])
    assert (tap.event_type, tap.placement, tap.product_id) == (
        "recommendation_click",
        {"recomBlockId": "b1"},
        "123",
    )
    viewed = _one("impressionContentViewed", VALID["impressionContentViewed"])
    assert viewed.attributes == {"impressionContentId": "568da4f6"}


def test_set_contact_keeps_personal_fields_in_attributes() -> None:
    body = _with("setContact", email="a@b.c", phone="+70000000000", customData={"tier": "gold", "score": 1.5})
    event = _one("setContact", body)
    assert event.attributes == {
        "contactExternalId": "2342dfgf253454c645346wer3",
        "email": "a@b.c",
        "phone": "+70000000000",
        "customData": {"tier": "gold", "score": Decimal("1.5")},
    }


def test_unseen_methods_have_their_event_types() -> None:
    assert _one("welcomeSequence", VALID["welcomeSequence"]).event_type == "welcome_sequence"
    assert _one("emailClick", VALID["emailClick"]).event_type == "email_click"


def test_unknown_fields_are_kept_in_attributes() -> None:
    event = _one("view", _with("view", brand="Acme", nested={"price": 2.50}))
    assert event.attributes == {"stockId": "NewYork", "brand": "Acme", "nested": {"price": Decimal("2.50")}}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param("2018-09-15T18:53:00+03:00", SEED_TIME, id="offset-converted"),
        pytest.param("2018-09-15T15:53:00", SEED_TIME, id="no-offset-is-utc"),
        pytest.param("2018-09-15T15:53:00Z", SEED_TIME, id="zulu"),
        pytest.param(DROP, RECEIVED_AT, id="absent-is-received-at"),
    ],
)
def test_occurred_at_is_utc(timestamp: Any, expected: datetime) -> None:
    event = _one("view", _with("view", timestamp=timestamp))
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC


def test_derived_id_ignores_whitespace_and_key_order() -> None:
    compact = _dumps(VALID["order"])
    spaced = json.dumps(dict(reversed(list(VALID["order"].items()))), indent=4, ensure_ascii=False).encode()
    (a,) = FORMAT.to_canonical(compact, _meta("order"))
    (b,) = FORMAT.to_canonical(spaced, _meta("order"))
    assert a.event_id == b.event_id
    assert a.raw != b.raw


def test_same_event_alone_or_batched_has_the_same_id() -> None:
    alone = _one("order", VALID["order"])
    batched = FORMAT.to_canonical(_dumps(ALL_ENVELOPES), _meta("visitorEvents"))
    assert [e.event_type for e in batched] == [event_type for _, event_type in METHODS.values()]
    assert batched[5].event_id == alone.event_id
    assert len({e.event_id for e in batched}) == len(batched)


def test_derived_id_depends_on_tenant_and_method() -> None:
    base = _one("addToBasket", VALID["addToBasket"]).event_id
    (other_tenant,) = FORMAT.to_canonical(_dumps(VALID["addToBasket"]), _meta("addToBasket", "shop-b"))
    assert other_tenant.event_id != base
    assert _one("view", VALID["addToBasket"]).event_id != base


def test_batch_raw_is_each_events_own_bytes() -> None:
    body = b'[ {"view" :  {"sessionExternalId":"s","productId":1} } ,{"search":{"sessionExternalId":"s","searchPhrase":"x"}}]'
    events = FORMAT.to_canonical(body, _meta("visitorEvents"))
    assert [e.raw for e in events] == [
        b'{"sessionExternalId":"s","productId":1}',
        b'{"sessionExternalId":"s","searchPhrase":"x"}',
    ]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        pytest.param("view", b"not json", id="not-json"),
        pytest.param("view", b'{"productId": 1}', id="fails-the-schema"),
        pytest.param("view", b'{"sessionExternalId": "\xff", "productId": 1}', id="invalid-utf8"),
        pytest.param("visitorEvents", b'[{"view": {}, "order": {}}]', id="two-keys"),
        pytest.param("visitorEvents", b'[{"viewProduct": {}}]', id="unknown-key"),
        pytest.param("viewProduct", b"{}", id="unknown-route"),
    ],
)
def test_unreadable_record_is_an_invalid_event(route: str, body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        FORMAT.to_canonical(body, _meta(route))
    assert caught.value.reason == "undecodable"


# --------------------------------------------------------------------------------------------- property

FIELD_NAMES = sorted({name for body in VALID.values() for name in body} | {"customData", "email", "phone"})
json_scalars = mutations.json_scalars | st.sampled_from(
    ["", "NaN", "1e999999", "2018-09-15T15:53:00Z", "12.5", SESSION]
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _check_outcome(body: bytes, route: str) -> None:
    accepted_or_4xx(FORMAT, body, route, NOW, _meta(route))


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[str, Any]:
    method = draw(st.sampled_from(list(METHODS)))
    body: dict[str, Any] = dict(VALID[method])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        name = draw(st.sampled_from(FIELD_NAMES))
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    if draw(st.booleans()):
        batch = [*ALL_ENVELOPES[:2], {draw(st.sampled_from([*METHODS, "x"])): body}]
        return "visitorEvents", batch
    return method, body


ROUTES_UNDER_TEST = sorted(ROUTE_NAMES)
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(value=json_values, route=st.sampled_from(ROUTES_UNDER_TEST), ascii_only=st.booleans())
def test_any_json_value_is_accepted_or_refused_with_4xx(value: Any, route: str, ascii_only: bool) -> None:
    _check_outcome(encode_json(value, ascii_only), route)


@PROPERTY_SETTINGS
@given(mutated=mutated_bodies(), ascii_only=st.booleans())
def test_mutated_valid_body_is_accepted_or_refused_with_4xx(
    mutated: tuple[str, Any], ascii_only: bool
) -> None:
    route, body = mutated
    _check_outcome(encode_json(body, ascii_only), route)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=64), route=st.sampled_from(ROUTES_UNDER_TEST))
def test_any_bytes_are_accepted_or_refused_with_4xx(body: bytes, route: str) -> None:
    _check_outcome(body, route)
