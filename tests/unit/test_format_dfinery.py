"""The DFINERY format: the contract corpus, every enforced constraint with the document's exact result
bodies, every reply, the canonical event with `abx:` / `c:` names, and a property test that no body makes
validate() fail any other way than with a 4xx Rejection."""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.formats.base import Problem, Rejection, Reply, VendorFormat
from pipeline.formats.dfinery import ERROR_HEADER, FORMAT
from pipeline.record import RecordMeta
from tests import mutations
from tests.corpus import request_body, vendor_cases
from tests.format_checks import accepted_or_4xx, assert_reply_matches, encode_json

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RECEIVED_MS = 1_714_564_800_000
RECEIVED_AT = datetime.fromtimestamp(RECEIVED_MS / 1000, tz=UTC)
EVENT_ID = "0166a71c-caf4-462d-8201-9c30c40f2354"

_typed: VendorFormat = FORMAT  # the module object satisfies the protocol (checked by mypy)


CASES = vendor_cases("dfinery")


def _auth_problem(request: dict[str, Any]) -> Problem | None:
    authorization = request.get("headers", {}).get("Authorization")
    if authorization is None:
        return Problem.UNAUTHENTICATED
    if authorization != "Bearer ${API_KEY}":
        return Problem.INVALID_CREDENTIALS
    return None


BODY_CASES = [c for c in CASES if _auth_problem(c["request"]) is None]
AUTH_CASES = [c for c in CASES if _auth_problem(c["request"]) is not None]
VALID_CASES = [c for c in BODY_CASES if c["expect"]["status"] == 200]


def _reply(body: bytes) -> Reply:
    try:
        return FORMAT.validate(body, "events", NOW, 600).reply
    except Rejection as rejection:
        return FORMAT.error(rejection)


def _meta(tenant: str = "shop-a") -> RecordMeta:
    return RecordMeta(
        source="dfinery", route="events", tenant=tenant, received_at_ms=RECEIVED_MS, request_id="r1"
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _result(code: int, message: str | None) -> dict[str, Any]:
    return {"result_code": code, "result_msg": message, "result_data": None}


# ---------------------------------------------------------------------------------------------- corpus


def test_corpus_has_dfinery_cases() -> None:
    assert len(BODY_CASES) >= 4
    assert {_auth_problem(c["request"]) for c in AUTH_CASES} == {
        Problem.UNAUTHENTICATED,
        Problem.INVALID_CREDENTIALS,
    }


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in BODY_CASES])
def test_corpus_case_reply(case: dict[str, Any]) -> None:
    assert_reply_matches(_reply(request_body(case["request"])), case["expect"])


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in AUTH_CASES])
def test_corpus_auth_case_reply(case: dict[str, Any]) -> None:
    problem = _auth_problem(case["request"])
    assert problem is not None
    assert_reply_matches(FORMAT.error(Rejection(problem, "refused by the receiver")), case["expect"])


def test_format_identity() -> None:
    assert FORMAT.source == "dfinery"
    assert [(r.path, r.name) for r in FORMAT.routes] == [("/api/v1/events", "events")]
    assert FORMAT.requires_json_content_type is True


# ------------------------------------------------------------------------------------------ constraints

# The document's own example, with every custom item field it shows.
SEED_EXAMPLE: dict[str, Any] = {
    "event_attributes": {
        "event_id": EVENT_ID,
        "event_name": "purchase",
        "event_datetime": 1685672905000,
        "order_id": "123456789",
        "order_sales": 4000000.0,
        "payment_method": "MobilePayment",
        "discount": 11.0,
        "items": [
            {
                "product_id": "123456789",
                "product_name": "Macbook Air 13",
                "category1": "Macbook Air",
                "quantity": 1,
                "price": 1900000.0,
                "discount": 200000.0,
                "coupon_id": "asdf1234asdf342",
                "product_processor": "m1",
                "trade_in_serial_num": "12312313",
                "coupon_discount_amount": "11",
            },
            {
                "product_id": "23432424",
                "product_name": "Macbook Pro 13'",
                "quantity": 1,
                "price": 4000000.0,
                "trade_in_serial_num": 12313131,
                "coupon_expired_date": "2024-01-01",
            },
        ],
        "source_type": "POS",
        "region_type": "tokyo",
        "use_applepay": True,
        "register_applepay": True,
    },
    "user_attributes": {"user_id": "user1", "user_name": "Hong Gil-dong"},
}
MINIMAL: dict[str, Any] = {
    "event_attributes": {"event_id": EVENT_ID, "event_name": "login", "event_datetime": 1685672905000},
    "user_attributes": {"user_id": "user1"},
}
DROP = object()


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`event__name=value` changes event_attributes.name, `user__name` user_attributes, `item__name` the
    first item; DROP removes the key."""
    body = copy.deepcopy(base)
    for key, value in changes.items():
        level, _, name = key.rpartition("__")
        target = body
        if level == "event":
            target = body["event_attributes"]
        elif level == "user":
            target = body["user_attributes"]
        elif level == "item":
            target = body["event_attributes"]["items"][0]
        if value is DROP:
            target.pop(name, None)
        else:
            target[name] = value
    return body


ACCEPTED = [
    pytest.param(SEED_EXAMPLE, id="document-example"),
    pytest.param(MINIMAL, id="minimal"),
    pytest.param(_with(MINIMAL, event__event_name="signup_complete"), id="custom-event-name"),
    pytest.param(_with(MINIMAL, event__event_id=EVENT_ID.upper()), id="uuid-upper-case"),
    pytest.param(_with(MINIMAL, event__event_datetime=0), id="datetime-epoch"),
    pytest.param(_with(MINIMAL, event__event_datetime=253_402_300_799_999), id="datetime-max"),
    pytest.param(_with(MINIMAL, user__user_id=42), id="user-id-number-typecast"),
    pytest.param(_with(MINIMAL, event__event_name=7), id="event-name-number-typecast"),
    pytest.param(_with(SEED_EXAMPLE, event__order_sales="4000000.00"), id="order-sales-numeric-string"),
    pytest.param(_with(SEED_EXAMPLE, event__order_sales=4000000), id="order-sales-integer"),
    pytest.param(_with(SEED_EXAMPLE, event__payment_method=None, event__discount=None), id="optional-null"),
    pytest.param(_with(SEED_EXAMPLE, event__items=[]), id="items-empty"),
    pytest.param(_with(SEED_EXAMPLE, event__items=None), id="items-null"),
    pytest.param(
        _with(SEED_EXAMPLE, item__price=None, item__note=None, item__flag=False), id="item-nulls-bools"
    ),
    pytest.param(_with(SEED_EXAMPLE, item__price="1900000"), id="item-price-string"),
    pytest.param(_with(MINIMAL, event__score=1.5, event__vip=False, event__tier="gold"), id="custom-scalars"),
    pytest.param(_with(MINIMAL, user__age=33, user__member=True), id="user-custom-scalars"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_valid_body_gets_the_success_reply(body: dict[str, Any]) -> None:
    accepted = FORMAT.validate(_dumps(body), "events", NOW, 600)
    assert accepted.events == 1
    assert accepted.reply.status == 200
    assert json.loads(accepted.reply.body) == {
        "result_code": 2000,
        "result_msg": None,
        "result_data": {"event_id": body["event_attributes"]["event_id"]},
    }


FORMAT_MSG = "Invalid request format."
REQUIRED = "Required parameters cannot be empty."
DATETIME = "Invalid event datetime format."
EVENT_TYPE = "eventAttribute contains unsupported value type."
ITEM_TYPE = "eventItemAttribute contains unsupported value type."
USER_TYPE = "userAttribute contains unsupported value type."
EA = "$.event_attributes"
UA = "$.user_attributes"

REJECTED = [
    # body shape
    pytest.param([MINIMAL], Problem.MALFORMED, "$", 4002, FORMAT_MSG, id="array-body"),
    pytest.param("purchase", Problem.MALFORMED, "$", 4002, FORMAT_MSG, id="string-body"),
    pytest.param({}, Problem.MISSING_FIELD, EA, 4002, REQUIRED, id="empty-object"),
    pytest.param(
        _with(MINIMAL, user_attributes=DROP), Problem.MISSING_FIELD, UA, 4002, REQUIRED, id="no-user"
    ),
    pytest.param(
        _with(MINIMAL, event_attributes=None), Problem.MISSING_FIELD, EA, 4002, REQUIRED, id="null-ea"
    ),
    pytest.param(_with(MINIMAL, event_attributes=[]), Problem.INVALID, EA, 4002, EVENT_TYPE, id="array-ea"),
    pytest.param(_with(MINIMAL, user_attributes="u1"), Problem.INVALID, UA, 4002, USER_TYPE, id="string-ua"),
    # event_id
    *(
        pytest.param(
            _with(MINIMAL, event__event_id=v), Problem.MISSING_FIELD, f"{EA}.event_id", 4002, REQUIRED, id=i
        )
        for v, i in ((DROP, "event-id-absent"), ("", "event-id-empty"), (None, "event-id-null"))
    ),
    *(
        pytest.param(
            _with(MINIMAL, event__event_id=v), Problem.INVALID, f"{EA}.event_id", 4002, EVENT_TYPE, id=i
        )
        for v, i in (
            ("0166a71c-caf4-462d-8201-9c30sd3fg54", "event-id-not-uuid"),
            ("0166a71ccaf4462d82019c30c40f2354", "event-id-no-hyphens"),
            (f"{EVENT_ID}\n", "event-id-trailing-newline"),
            (12345, "event-id-number"),
        )
    ),
    # event_name
    *(
        pytest.param(
            _with(MINIMAL, event__event_name=v),
            Problem.MISSING_FIELD,
            f"{EA}.event_name",
            4002,
            REQUIRED,
            id=i,
        )
        for v, i in ((DROP, "event-name-absent"), ("", "event-name-empty"), ("  ", "event-name-blank"))
    ),
    pytest.param(
        _with(MINIMAL, event__event_name={"n": 1}),
        Problem.INVALID,
        f"{EA}.event_name",
        4002,
        EVENT_TYPE,
        id="name-obj",
    ),
    pytest.param(
        _with(MINIMAL, event__event_name=True),
        Problem.INVALID,
        f"{EA}.event_name",
        4002,
        EVENT_TYPE,
        id="name-bool",
    ),
    # event_datetime
    pytest.param(
        _with(MINIMAL, event__event_datetime=DROP),
        Problem.MISSING_FIELD,
        f"{EA}.event_datetime",
        4002,
        REQUIRED,
        id="datetime-absent",
    ),
    *(
        pytest.param(
            _with(MINIMAL, event__event_datetime=v),
            Problem.EVENT_TIME,
            f"{EA}.event_datetime",
            4002,
            DATETIME,
            id=i,
        )
        for v, i in (
            ("2023-06-02 02:28:25", "datetime-string"),
            ("1685672905000", "datetime-numeric-string"),
            (1685672905000.0, "datetime-float"),
            (-1, "datetime-negative"),
            (253_402_300_800_000, "datetime-beyond-9999"),
            (True, "datetime-bool"),
        )
    ),
    # other predefined event properties
    *(
        pytest.param(
            _with(SEED_EXAMPLE, **{f"event__{k}": v}), Problem.INVALID, f"{EA}.{k}", 4002, EVENT_TYPE, id=i
        )
        for k, v, i in (
            ("order_id", 123456789, "order-id-number"),
            ("order_sales", "lots", "order-sales-text"),
            ("order_sales", "NaN", "order-sales-nan"),
            ("order_sales", True, "order-sales-bool"),
            ("payment_method", 1, "payment-method-number"),
            ("discount", [11], "discount-array"),
            ("items", {"product_id": "1"}, "items-object"),
        )
    ),
    # items
    pytest.param(
        _with(SEED_EXAMPLE, event__items=[1]),
        Problem.INVALID,
        f"{EA}.items[0]",
        4002,
        ITEM_TYPE,
        id="item-int",
    ),
    *(
        pytest.param(
            _with(SEED_EXAMPLE, **{f"item__{k}": v}),
            Problem.INVALID,
            f"{EA}.items[0].{k}",
            4002,
            ITEM_TYPE,
            id=i,
        )
        for k, v, i in (
            ("product_id", 123, "item-product-id-number"),
            ("quantity", "1", "item-quantity-string"),
            ("quantity", 1.5, "item-quantity-float"),
            ("price", "cheap", "item-price-text"),
            ("discount", {"v": 1}, "item-discount-object"),
            ("category1", ["a"], "item-category-array"),
            ("options", {"ram": "16g"}, "item-custom-object"),
            ("tags", ["a", "b"], "item-custom-array"),
        )
    ),
    # custom properties that are not scalars
    *(
        pytest.param(
            _with(MINIMAL, **{f"{level}__{name}": v}),
            Problem.UNSUPPORTED_PROPERTY,
            f"{path}.{name}",
            4007,
            f"Contains unsupported property {name}.",
            id=i,
        )
        for level, path, name, v, i in (
            ("event", EA, "coupon_info", {"id": 1}, "custom-object"),
            ("event", EA, "tags", ["a"], "custom-array"),
            ("event", EA, "source_type", None, "custom-null"),
            ("user", UA, "address", {"city": "Seoul"}, "user-custom-object"),
            ("user", UA, "user_name", None, "user-name-null"),
            ("event", EA, "a.b", [], "dotted-name"),
        )
    ),
    # user_id and user_name
    *(
        pytest.param(
            _with(MINIMAL, user__user_id=v), Problem.MISSING_FIELD, f"{UA}.user_id", 4002, REQUIRED, id=i
        )
        for v, i in ((DROP, "user-id-absent"), ("", "user-id-empty"), (None, "user-id-null"))
    ),
    *(
        pytest.param(_with(MINIMAL, **{f"user__{k}": v}), Problem.INVALID, f"{UA}.{k}", 4002, USER_TYPE, id=i)
        for k, v, i in (
            ("user_id", {"id": 1}, "user-id-object"),
            ("user_id", False, "user-id-bool"),
            ("user_name", 5, "user-name-number"),
        )
    ),
]


@pytest.mark.parametrize(("body", "problem", "path", "code", "message"), REJECTED)
def test_invalid_body_gets_the_documents_reply_and_names_the_field(
    body: Any, problem: Problem, path: str, code: int, message: str
) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(_dumps(body), "events", NOW, 600)
    assert (caught.value.problem, caught.value.path) == (problem, path)
    reply = FORMAT.error(caught.value)
    assert reply.status == 400
    assert json.loads(reply.body) == _result(code, message)
    assert path in reply.headers[ERROR_HEADER]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"event_name=purchase", id="form-encoded"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"event_attributes": {"event_name": "\xff"}}', id="invalid-utf8"),
        pytest.param(
            b'{"event_attributes": {"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}}", id="deep-nesting"
        ),
        pytest.param(b'{"user_attributes": {"user_id": "\\ud800"}}', id="lone-surrogate-escape"),
    ],
)
def test_unreadable_body_is_invalid_request_format(body: bytes) -> None:
    with pytest.raises(Rejection) as caught:
        FORMAT.validate(body, "events", NOW, 600)
    assert caught.value.problem is Problem.MALFORMED
    reply = FORMAT.error(caught.value)
    assert (reply.status, json.loads(reply.body)) == (400, _result(4002, FORMAT_MSG))
    assert reply.headers[ERROR_HEADER].startswith("malformed")


# ---------------------------------------------------------------------------------------------- replies

EXPECTED_REPLY: dict[Problem, tuple[int, dict[str, Any] | None]] = {
    Problem.UNAUTHENTICATED: (401, None),
    Problem.INVALID_CREDENTIALS: (400, _result(4001, "Invalid API Token Error.")),
    Problem.FORBIDDEN: (403, _result(4002, FORMAT_MSG)),
    Problem.MALFORMED: (400, _result(4002, FORMAT_MSG)),
    Problem.INVALID: (400, _result(4002, EVENT_TYPE)),
    Problem.MISSING_FIELD: (400, _result(4002, REQUIRED)),
    Problem.EMPTY: (400, _result(4002, REQUIRED)),
    Problem.EVENT_TIME: (400, _result(4002, DATETIME)),
    Problem.UNSUPPORTED_PROPERTY: (400, _result(4007, "Contains unsupported property order_id.")),
    Problem.TOO_LARGE: (413, _result(4002, FORMAT_MSG)),
    Problem.UNSUPPORTED_MEDIA_TYPE: (415, _result(4002, FORMAT_MSG)),
    Problem.TIMEOUT: (408, _result(4002, FORMAT_MSG)),
    Problem.RATE_LIMITED: (429, _result(4006, "API RateLimit exceeded.")),
    # The document's 500 example, verbatim (its message is the token one).
    Problem.UNAVAILABLE: (503, _result(5001, "Service temporarily unavailable.")),
    Problem.INTERNAL: (500, _result(5001, "Internal server error.")),
}


def test_every_problem_has_an_expected_reply() -> None:
    assert set(EXPECTED_REPLY) == set(Problem)


@pytest.mark.parametrize("problem", [pytest.param(p, id=p.value) for p in Problem])
def test_error_reply_for_every_problem(problem: Problem) -> None:
    retry_after = 30 if problem in (Problem.RATE_LIMITED, Problem.UNAVAILABLE) else None
    rejection = Rejection(problem, "details", f"{EA}.order_id", retry_after=retry_after)
    reply = FORMAT.error(rejection)
    status, body = EXPECTED_REPLY[problem]
    assert reply.status == status
    if body is None:
        assert (reply.body, reply.content_type) == (b"", None)
    else:
        assert reply.content_type == "application/json"
        assert json.loads(reply.body) == body
    assert reply.headers[ERROR_HEADER]
    if retry_after is None:
        assert "Retry-After" not in reply.headers
    else:
        assert reply.headers["Retry-After"] == "30"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param(f"{EA}.items[2].price", ITEM_TYPE, id="item"),
        pytest.param(f"{EA}.items", EVENT_TYPE, id="items-itself"),
        pytest.param(f"{EA}.order_sales", EVENT_TYPE, id="event"),
        pytest.param(f"{UA}.user_id", USER_TYPE, id="user"),
        pytest.param(None, FORMAT_MSG, id="no-path"),
    ],
)
def test_type_error_message_follows_the_path(path: str | None, message: str) -> None:
    reply = FORMAT.error(Rejection(Problem.INVALID, "wrong type", path))
    assert json.loads(reply.body) == _result(4002, message)


@pytest.mark.parametrize("problem", [Problem.UNAUTHENTICATED, Problem.INVALID_CREDENTIALS, Problem.FORBIDDEN])
def test_auth_replies_never_echo_the_token(problem: Problem) -> None:
    reply = FORMAT.error(Rejection(problem, "token ep_wrong_key is unknown"))
    assert b"ep_wrong_key" not in reply.body
    assert "ep_wrong_key" not in reply.headers[ERROR_HEADER]


def test_error_header_is_printable_ascii() -> None:
    reply = FORMAT.error(Rejection(Problem.UNSUPPORTED_PROPERTY, "bad\r\nX-Injected: 1 — ключ", f"{EA}.ключ"))
    header = reply.headers[ERROR_HEADER]
    assert all(" " <= c <= "~" for c in header)
    assert "\r" not in header and "\n" not in header
    assert json.loads(reply.body) == _result(4007, "Contains unsupported property ключ.")


# -------------------------------------------------------------------------------------------- canonical


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in VALID_CASES])
def test_corpus_body_gives_the_stored_events(case: dict[str, Any]) -> None:
    body = request_body(case["request"])
    events = FORMAT.to_canonical(body, _meta())
    assert Counter(e.event_type for e in events) == Counter(case["stored"])
    (event,) = events
    sent = case["request"]["body"]
    assert event.event_id == sent["event_attributes"]["event_id"]
    assert event.user_id == sent["user_attributes"]["user_id"]
    assert json.loads(event.raw) == sent


def test_seed_purchase_columns() -> None:
    (event,) = FORMAT.to_canonical(_dumps(SEED_EXAMPLE), _meta())
    assert (event.tenant, event.source, event.event_type) == ("shop-a", "dfinery", "purchase")
    assert event.event_id == EVENT_ID
    assert event.occurred_at == datetime(2023, 6, 2, 2, 28, 25, tzinfo=UTC)
    assert event.received_at == RECEIVED_AT
    assert (event.user_id, event.order_id) == ("user1", "123456789")
    assert event.price == Decimal("4000000.0")
    assert type(event.price) is Decimal
    assert event.raw == _dumps(SEED_EXAMPLE)
    assert event.attributes == {
        "abx:payment_method": "MobilePayment",
        "abx:discount": Decimal("11.0"),
        "c:source_type": "POS",
        "c:region_type": "tokyo",
        "c:use_applepay": True,
        "c:register_applepay": True,
        "c:user_name": "Hong Gil-dong",
    }
    assert event.items is not None
    first, second = event.items
    assert first["price"] == Decimal("1900000.0") and isinstance(first["price"], Decimal)
    assert first["discount"] == Decimal("200000.0")
    assert (first["quantity"], first["product_processor"]) == (1, "m1")
    assert second["trade_in_serial_num"] == 12313131


def test_event_name_is_kept_exactly() -> None:
    body = _with(MINIMAL, event__event_name="Add To Wishlist ✓")
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert event.event_type == "Add To Wishlist ✓"
    assert (event.price, event.items, event.order_id, event.attributes) == (None, None, None, None)


def test_numbers_typecast_to_strings() -> None:
    body = _with(MINIMAL, user__user_id=42, event__event_name=7)
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert (event.user_id, event.event_type) == ("42", "7")


def test_numeric_string_amounts_become_decimals() -> None:
    body = _with(SEED_EXAMPLE, event__order_sales="19.90", event__discount="0.10")
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert event.price == Decimal("19.90")
    assert event.attributes is not None and event.attributes["abx:discount"] == Decimal("0.10")


def test_custom_float_is_exact() -> None:
    body = _with(MINIMAL, event__score=0.1)
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert event.attributes == {"c:score": Decimal("0.1")}


def test_user_property_named_like_an_event_property_is_kept_apart() -> None:
    body = _with(MINIMAL, event__channel="web", user__channel="app")
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert event.attributes == {"c:channel": "web", "user:c:channel": "app"}


def test_occurred_at_from_epoch_milliseconds() -> None:
    body = _with(MINIMAL, event__event_datetime=1685672905123)
    (event,) = FORMAT.to_canonical(_dumps(body), _meta())
    assert event.occurred_at == datetime(2023, 6, 2, 2, 28, 25, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"event_name=purchase", id="not-json"),
        pytest.param(b'{"event_attributes": {}, "user_attributes": {}}', id="fails-the-schema"),
        pytest.param(b'{"event_attributes": {"x": "\xff"}}', id="invalid-utf8"),
    ],
)
def test_unreadable_record_is_an_invalid_event(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        FORMAT.to_canonical(body, _meta())
    assert caught.value.reason == "undecodable"


# --------------------------------------------------------------------------------------------- property

EVENT_KEYS = [*SEED_EXAMPLE["event_attributes"], "custom", "c:x"]
USER_KEYS = ["user_id", "user_name", "age"]
ITEM_KEYS = [*SEED_EXAMPLE["event_attributes"]["items"][0], "options"]
json_scalars = mutations.json_scalars | st.sampled_from(
    ["", " ", "NaN", "1e999999", EVENT_ID, "1685672905000", "19.90"]
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*EVENT_KEYS, *USER_KEYS]) | st.text(max_size=6), children, max_size=4
        )
    ),
    max_leaves=12,
)


def _check_outcome(body: bytes) -> None:
    outcome = accepted_or_4xx(FORMAT, body, "events", NOW, _meta())
    if outcome is not None:
        accepted, (event,) = outcome
        assert json.loads(accepted.reply.body)["result_data"]["event_id"] == event.event_id


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    body = copy.deepcopy(draw(st.sampled_from([SEED_EXAMPLE, MINIMAL])))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        level = draw(st.sampled_from(["event", "event", "user", "item", "item", "top"]))
        if level == "event":
            target, keys = body["event_attributes"], EVENT_KEYS
        elif level == "user":
            target, keys = body["user_attributes"], USER_KEYS
        elif level == "item" and isinstance(body["event_attributes"].get("items"), list):
            items = [i for i in body["event_attributes"]["items"] if isinstance(i, dict)]
            if not items:
                continue
            target, keys = items[0], ITEM_KEYS
        else:
            target, keys = body, ["event_attributes", "user_attributes", "extra"]
        if not isinstance(target, dict):
            continue
        name = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            target.pop(name, None)
        else:
            target[name] = draw(json_values)
        if not isinstance(body.get("event_attributes"), dict) or not isinstance(
            body.get("user_attributes"), dict
        ):
            break
    return body


PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value_is_accepted_or_refused_with_4xx(value: Any, ascii_only: bool) -> None:
    _check_outcome(encode_json(value, ascii_only))


@PROPERTY_SETTINGS
@given(body=mutated_bodies(), ascii_only=st.booleans())
def test_mutated_valid_body_is_accepted_or_refused_with_4xx(body: Any, ascii_only: bool) -> None:
    _check_outcome(encode_json(body, ascii_only))


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=64))
def test_any_bytes_are_accepted_or_refused_with_4xx(body: bytes) -> None:
    _check_outcome(body)
