"""DFINERY's S2S Event API (`POST /api/v1/events`): the request Structs, the result_code replies of the
document, and the canonical event with DFINERY's `abx:` / `c:` property names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from pipeline.canonical import CanonicalEvent
from pipeline.errors import InvalidEvent
from pipeline.formats import common
from pipeline.formats.base import Accepted, Problem, Rejection, Reply, Route
from pipeline.formats.common import Money, parse_money
from pipeline.record import RecordMeta

SOURCE = "dfinery"
ERROR_HEADER = "X-Eventpipe-Error"

# "event_id : Write in uuid format" (the str() of Python's uuid.UUID). \Z, not $: $ allows a trailing newline.
EventId = Annotated[
    str, Meta(pattern=r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
]
# Epoch milliseconds from 1970 up to the last instant a datetime can hold (9999-12-31T23:59:59.999Z).
EpochMillis = Annotated[int, Meta(ge=0, le=253_402_300_799_999)]
NonEmpty = Annotated[str, Meta(min_length=1)]

PREDEFINED_EVENT = frozenset(
    {
        "event_id",
        "event_name",
        "event_datetime",
        "order_id",
        "order_sales",
        "payment_method",
        "discount",
        "items",
    }
)
PREDEFINED_USER = frozenset({"user_id"})
PREDEFINED_ITEM = frozenset(
    {
        "product_id",
        "product_name",
        "category1",
        "category2",
        "category3",
        "category4",
        "category5",
        "quantity",
        "price",
        "discount",
        "coupon_id",
    }
)


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Money:
        return parse_money(value)
    raise NotImplementedError


class Item(msgspec.Struct):
    """ItemAttributes. Custom item fields (the seed's `product_processor`, `trade_in_serial_num`, ...) are
    ignored here, checked to be scalars by validate, and kept in `items` as sent."""

    product_id: str | None = None
    product_name: str | None = None
    category1: str | None = None
    category2: str | None = None
    category3: str | None = None
    category4: str | None = None
    category5: str | None = None
    quantity: int | None = None
    price: Money | None = None
    discount: Money | None = None
    coupon_id: str | None = None


class EventAttributes(msgspec.Struct):
    event_id: EventId
    # The seed: event_name, event_id and user_id are "forcibly typecast" to strings, so a number is taken.
    event_name: NonEmpty | int
    event_datetime: EpochMillis
    order_id: str | None = None
    order_sales: Money | None = None
    payment_method: str | None = None
    discount: Money | None = None
    items: list[Item] | None = None


class UserAttributes(msgspec.Struct):
    user_id: NonEmpty | int
    # A custom property (it becomes c:user_name) that the seed still types as String.
    user_name: str | None = None


class DfineryRequest(msgspec.Struct):
    event_attributes: EventAttributes
    user_attributes: UserAttributes


class _Properties(msgspec.Struct):
    """Every property as sent, custom ones too: for the checks Structs cannot express, and for attributes."""

    event_attributes: dict[str, Any]
    user_attributes: dict[str, Any]


# float_hook: JSON numbers reach Money (and the kept properties) as exact Decimals, never through a float.
_DECODER = msgspec.json.Decoder(DfineryRequest, dec_hook=_dec_hook, float_hook=Decimal)
_PROPERTIES_DECODER = msgspec.json.Decoder(_Properties, float_hook=Decimal)
_RAW_DECODER = msgspec.json.Decoder(msgspec.Raw)

ROUTES: tuple[Route, ...] = (Route("/api/v1/events", "events"),)

# The document's result_msg strings, verbatim.
MSG_FORMAT = "Invalid request format."
MSG_REQUIRED = "Required parameters cannot be empty."
MSG_DATETIME = "Invalid event datetime format."
MSG_BAD_CREDENTIAL = "Invalid API Token Error."
MSG_RATE_LIMIT = "API RateLimit exceeded."
MSG_TYPE = "{} contains unsupported value type."
MSG_PROPERTY = "Contains unsupported property {}."

# problem -> (HTTP status, result_code, result_msg) for the problems whose body does not depend on the field.
_FIXED: dict[Problem, tuple[int, int, str]] = {
    Problem.INVALID_CREDENTIALS: (400, 4001, MSG_BAD_CREDENTIAL),
    Problem.FORBIDDEN: (403, 4002, MSG_FORMAT),
    Problem.MALFORMED: (400, 4002, MSG_FORMAT),
    Problem.MISSING_FIELD: (400, 4002, MSG_REQUIRED),
    Problem.EMPTY: (400, 4002, MSG_REQUIRED),
    Problem.EVENT_TIME: (400, 4002, MSG_DATETIME),
    Problem.TOO_LARGE: (413, 4002, MSG_FORMAT),
    Problem.UNSUPPORTED_MEDIA_TYPE: (415, 4002, MSG_FORMAT),
    Problem.TIMEOUT: (408, 4002, MSG_FORMAT),
    Problem.RATE_LIMITED: (429, 4006, MSG_RATE_LIMIT),
    # The document's 500 example repeats the 4001 message, evidently a copy-paste slip; clients branch
    # on result_code, so 5001 keeps its code with a message that says what happened.
    Problem.UNAVAILABLE: (503, 5001, "Service temporarily unavailable."),
    Problem.INTERNAL: (500, 5001, "Internal server error."),
}

# Auth details never echo the receiver's message (it may quote the token).
_AUTH_DETAILS: dict[Problem, str] = {
    Problem.UNAUTHENTICATED: "no API token",
    Problem.INVALID_CREDENTIALS: "invalid API token",
    Problem.FORBIDDEN: "API token not allowed here",
}
_DETAIL_LIMIT = 300

_EVENT_PATH = "$.event_attributes"
_ITEMS_PATH = "$.event_attributes.items["
_USER_PATH = "$.user_attributes"


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_scalar(value: object) -> bool:
    return not isinstance(value, dict | list) and value is not None


def _refine(rejection: Rejection, *, null_is_missing: bool) -> Rejection:
    """Map msgspec's verdicts onto the document's error classes."""
    problem, path = rejection.problem, rejection.path
    if problem is Problem.INVALID:
        if path == "$":
            problem = Problem.MALFORMED  # the body is JSON but not an object of the two attribute objects
        elif path == f"{_EVENT_PATH}.event_datetime":
            problem = Problem.EVENT_TIME
        elif null_is_missing and "got `null`" in rejection.message:
            problem = Problem.MISSING_FIELD
    if problem is rejection.problem:
        return rejection
    return Rejection(problem, rejection.message, path)


def _decode(
    decoder: msgspec.json.Decoder[Any], body: bytes, *, null_is_missing: bool, check_text: bool
) -> Any:
    try:
        return common.decode(decoder, body, check_text=check_text)
    except Rejection as rejection:
        refined = _refine(rejection, null_is_missing=null_is_missing)
        if refined is rejection:
            raise
        raise refined from rejection


def _check_properties(props: _Properties) -> None:
    """Required values present and not empty; custom properties scalar (objects, arrays and null have no
    DFINERY type: 4007 at the event and user level, a type error inside an item)."""
    event, user = props.event_attributes, props.user_attributes
    for name in ("event_id", "event_name", "event_datetime"):
        if _is_empty(event.get(name)):
            raise Rejection(
                Problem.MISSING_FIELD, f"event_attributes.{name} is required", f"{_EVENT_PATH}.{name}"
            )
    if _is_empty(user.get("user_id")):
        raise Rejection(Problem.MISSING_FIELD, "user_attributes.user_id is required", f"{_USER_PATH}.user_id")
    for path, properties, predefined in (
        (_EVENT_PATH, event, PREDEFINED_EVENT),
        (_USER_PATH, user, PREDEFINED_USER),
    ):
        for name, value in properties.items():
            if name not in predefined and not _is_scalar(value):
                raise Rejection(
                    Problem.UNSUPPORTED_PROPERTY,
                    f"custom property `{name}` must be a string, number or boolean",
                    f"{path}.{name}",
                )
    items = event.get("items")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue  # the typed pass reports it
            for name, value in item.items():
                if name not in PREDEFINED_ITEM and isinstance(value, dict | list):
                    raise Rejection(
                        Problem.INVALID,
                        f"custom item property `{name}` must be a string, number or boolean",
                        f"{_ITEMS_PATH}{index}].{name}",
                    )


def _header_safe(text: str) -> str:
    """A header value: printable ASCII only, bounded."""
    ascii_text = text.encode("ascii", "backslashreplace").decode("ascii")
    cleaned = "".join(c if " " <= c <= "~" else " " for c in ascii_text)
    return cleaned[:_DETAIL_LIMIT]


def _detail(rejection: Rejection) -> str:
    auth = _AUTH_DETAILS.get(rejection.problem)
    if auth is not None:
        return auth
    where = f" at {rejection.path}" if rejection.path else ""
    message = rejection.message.removesuffix(f" - at `{rejection.path}`")
    return _header_safe(f"{rejection.problem.value}{where}: {message}")


def _type_message(path: str | None) -> str | None:
    if path is None:
        return None
    if path.startswith(_ITEMS_PATH):
        return MSG_TYPE.format("eventItemAttribute")
    if path == _EVENT_PATH or path.startswith((f"{_EVENT_PATH}.", f"{_EVENT_PATH}[")):
        return MSG_TYPE.format("eventAttribute")
    if path == _USER_PATH or path.startswith((f"{_USER_PATH}.", f"{_USER_PATH}[")):
        return MSG_TYPE.format("userAttribute")
    return None


def _property_name(path: str | None) -> str:
    # Paths are "$.<level>_attributes.<name>"; the name may itself hold dots, so split twice only.
    parts = (path or "").split(".", 2)
    return parts[2] if len(parts) == 3 else ""


def _result(status: int, code: int, message: str | None, data: Any, headers: dict[str, str]) -> Reply:
    return common.json_reply(
        status, {"result_code": code, "result_msg": message, "result_data": data}, headers
    )


class DfineryFormat:
    source = SOURCE
    routes = ROUTES
    request_types: Mapping[str, Any] = {"events": DfineryRequest}
    requires_json_content_type = True

    def validate(
        self, body: bytes, route: str, received_at: datetime, future_skew_seconds: float
    ) -> Accepted:
        # The document processes "only data within a maximum of 48 hours" but answers 2000 regardless
        # (its own example is years old): the consumer's window judges the time against received_at.
        props: _Properties = _decode(_PROPERTIES_DECODER, body, null_is_missing=True, check_text=True)
        _check_properties(props)
        # the same bytes again, for the typed Structs: their text was checked by the first pass
        request: DfineryRequest = _decode(_DECODER, body, null_is_missing=False, check_text=False)
        reply = _result(200, 2000, None, {"event_id": request.event_attributes.event_id}, {})
        return Accepted(events=1, reply=reply)

    def error(self, rejection: Rejection) -> Reply:
        headers = {ERROR_HEADER: _detail(rejection), **common.retry_headers(rejection)}
        problem = rejection.problem
        if problem is Problem.UNAUTHENTICATED:
            return Reply(status=401, body=b"", content_type=None, headers=headers)
        if problem is Problem.UNSUPPORTED_PROPERTY:
            return _result(400, 4007, MSG_PROPERTY.format(_property_name(rejection.path)), None, headers)
        if problem is Problem.INVALID:
            return _result(400, 4002, _type_message(rejection.path) or MSG_FORMAT, None, headers)
        status, code, message = _FIXED[problem]
        return _result(status, code, message, None, headers)

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        try:
            body.decode("utf-8")
            request = _DECODER.decode(body)
            props = _PROPERTIES_DECODER.decode(body)
            raw = bytes(_RAW_DECODER.decode(body))
        except (UnicodeDecodeError, msgspec.DecodeError, RecursionError) as exc:
            raise InvalidEvent("undecodable", f"DFINERY event body: {exc}") from exc
        event, user = request.event_attributes, request.user_attributes
        received_at = meta.received_at
        items = props.event_attributes.get("items")
        return [
            CanonicalEvent(
                tenant=meta.tenant,
                source=SOURCE,
                event_type=str(event.event_name),
                event_id=event.event_id,
                occurred_at=common.from_epoch_millis(event.event_datetime),
                received_at=received_at,
                raw=raw,
                user_id=str(user.user_id),
                order_id=event.order_id,
                price=Decimal(event.order_sales) if event.order_sales is not None else None,
                items=items if isinstance(items, list) else None,
                attributes=_attributes(event, props) or None,
            )
        ]


def _attributes(event: EventAttributes, props: _Properties) -> dict[str, Any]:
    """DFINERY's own names: predefined properties `abx:`, custom ones `c:`. A user property whose `c:` name
    an event property already took is kept as `user:c:<name>`."""
    attributes: dict[str, Any] = {}
    if event.payment_method is not None:
        attributes["abx:payment_method"] = event.payment_method
    if event.discount is not None:
        attributes["abx:discount"] = Decimal(event.discount)
    for name, value in props.event_attributes.items():
        if name not in PREDEFINED_EVENT:
            attributes[f"c:{name}"] = value
    for name, value in props.user_attributes.items():
        if name not in PREDEFINED_USER:
            key = f"c:{name}"
            attributes[f"user:{key}" if key in attributes else key] = value
    return attributes


FORMAT = DfineryFormat()
