"""The Impression API (iLambda "EDA cloud", `POST /upload/impression`): schema, replies, canonical events."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import msgspec

from pipeline.canonical import CanonicalEvent, derive_event_id
from pipeline.errors import InvalidEvent
from pipeline.formats.base import Accepted, Problem, Rejection, Reply, Route
from pipeline.formats.common import (
    decode,
    describe,
    from_epoch_seconds,
    json_reply,
    retry_headers,
)
from pipeline.record import RecordMeta

SOURCE: Final = "impression"
ROUTE: Final = "impression"

EventKey = Literal["click", "addCart", "addWish", "order", "orderPay", "imp", "pageView"]
EVENT_TYPES: Final[dict[str, str]] = {
    "imp": "impression",
    "click": "click",
    "addCart": "add_to_cart",
    "addWish": "add_to_wishlist",
    "order": "purchase",
    "orderPay": "order_paid",
    "pageView": "page_view",
}
# target_id names the order, not an item, for these (seed: "Item Id or order Id in terms of the context").
ORDER_KEYS: Final = frozenset({"order", "orderPay"})
# 9999-12-31T23:59:59Z: a later server_time (e.g. milliseconds sent as seconds) is no instant at all.
MAX_EPOCH_SECONDS: Final = 253_402_300_799


class ImpressionEvent(msgspec.Struct, kw_only=True):
    """One event. site_id, section, context, algorithm, page_id, prev_page_id and channel are not
    declared: they only go to `attributes`, so any shape a client sends is kept as sent. `algorithm` is
    marked required in the table, yet both documented samples omit it (DESIGN.md): not required."""

    event_key: EventKey
    # An integer id is kept as its string: it names the same item.
    target_id: Annotated[str, msgspec.Meta(min_length=1)] | int
    event_id: str | None = None
    cookie_id: str | int | None = None
    user_id: str | int | None = None
    # "unix timestamp" in seconds (iLambda's EDA cloud docs; the seed sample 1583853406 is 2020-03-10).
    server_time: Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_SECONDS)] | None = None
    price: Decimal | None = None
    currency: str | None = None
    item_count: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        # JSON numbers are doubles to the vendor's Node.js server; beyond that range they are no price.
        if self.price is not None and (not self.price.is_finite() or math.isinf(float(self.price))):
            raise ValueError("`price` must be a finite number")


class ImpressionRequest(msgspec.Struct, kw_only=True):
    events: Annotated[list[ImpressionEvent], msgspec.Meta(min_length=1)]


class RawImpressionRequest(msgspec.Struct, kw_only=True):
    """The same body with each event left as its own bytes, for `raw` and the derived ids."""

    events: list[msgspec.Raw]


_DECODER = msgspec.json.Decoder(ImpressionRequest)
_RAW_DECODER = msgspec.json.Decoder(RawImpressionRequest)
_EVENT_DECODER = msgspec.json.Decoder(ImpressionEvent)
# Every JSON number as an exact Decimal, so the JSON columns never hold a float.
_DOCUMENT_DECODER = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)

# Fields with a column of their own; everything else goes to `attributes`.
_COLUMN_FIELDS: Final = frozenset(
    {
        "event_id",
        "event_key",
        "target_id",
        "user_id",
        "cookie_id",
        "server_time",
        "price",
        "currency",
        "item_count",
    }
)
_SUCCESS = json_reply(200, {"status": "OK", "result": 1})
_SCHEMA_PREFIX: Final = "json not comply with schema: "

# status, name, code, message: the http-errors names Express uses; the message is fixed where the detail
# could carry what a client must never see (broker errors, stack traces).
_ERRORS: Final[dict[Problem, tuple[int, str, str, str | None]]] = {
    Problem.FORBIDDEN: (403, "ForbiddenError", "forbidden", "Forbidden"),
    Problem.TOO_LARGE: (413, "PayloadTooLargeError", "entity_too_large", None),
    Problem.UNSUPPORTED_MEDIA_TYPE: (415, "UnsupportedMediaTypeError", "unsupported_media_type", None),
    Problem.TIMEOUT: (408, "RequestTimeoutError", "request_timeout", None),
    Problem.RATE_LIMITED: (429, "TooManyRequestsError", "too_many_requests", None),
    Problem.UNAVAILABLE: (503, "ServiceUnavailableError", "service_unavailable", "Service Unavailable"),
    Problem.INTERNAL: (500, "InternalServerError", "internal_server_error", "Internal Server Error"),
}
_SCHEMA_PROBLEMS: Final = frozenset(
    {
        Problem.MALFORMED,
        Problem.INVALID,
        Problem.MISSING_FIELD,
        Problem.EMPTY,
        Problem.EVENT_TIME,
        Problem.UNSUPPORTED_PROPERTY,
    }
)


def _decode_request(body: bytes) -> ImpressionRequest:
    return decode(_DECODER, body)


def _unauthorized(message: str, code: str) -> Reply:
    # express-jwt's UnauthorizedError, as the seed's "Invalid Token" sample shows it.
    error = {"status": 401, "name": "UnauthorizedError", "message": message, "code": code}
    return json_reply(401, {"errors": {"message": message, "error": error}})


class ImpressionFormat:
    request_types: Mapping[str, Any] = {"impression": ImpressionRequest}
    source: str = SOURCE
    routes: tuple[Route, ...] = (Route("/upload/impression", ROUTE),)
    requires_json_content_type: bool = True

    def validate(
        self, body: bytes, route: str, received_at: datetime, future_skew_seconds: float
    ) -> Accepted:
        # server_time is not checked against received_at: the vendor documents no such refusal, and the
        # consumer's window rejects events too far in the future.
        request = _decode_request(body)
        return Accepted(events=len(request.events), reply=_SUCCESS)

    def error(self, rejection: Rejection) -> Reply:
        problem = rejection.problem
        if problem is Problem.INVALID_CREDENTIALS:
            return _unauthorized(rejection.message, "invalid_token")
        if problem is Problem.UNAUTHENTICATED:
            return _unauthorized("No authorization token was found", "credentials_required")
        if problem in _SCHEMA_PROBLEMS:
            return json_reply(400, {"errors": {"message": _SCHEMA_PREFIX + describe(rejection), "error": {}}})
        status, name, code, fixed = _ERRORS[problem]
        message = fixed or rejection.message
        error = {"status": status, "name": name, "message": message, "code": code}
        headers = retry_headers(rejection)
        if problem is Problem.RATE_LIMITED and not headers:
            headers = {"Retry-After": "1"}
        return json_reply(status, {"errors": {"message": message, "error": error}}, headers)

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        try:
            raw_request = _RAW_DECODER.decode(body)
            received_at = meta.received_at
            return [_event(raw, meta, received_at) for raw in raw_request.events]
        except (msgspec.DecodeError, RecursionError, ValueError, OverflowError) as exc:
            # msgspec.ValidationError is a DecodeError: a body the receiver would have refused.
            raise InvalidEvent("undecodable", f"impression body: {exc}") from exc


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _event(raw: msgspec.Raw, meta: RecordMeta, received_at: datetime) -> CanonicalEvent:
    event = _EVENT_DECODER.decode(raw)
    document = _DOCUMENT_DECODER.decode(raw)
    raw_event = bytes(raw)
    target = str(event.target_id)
    is_order = event.event_key in ORDER_KEYS
    attributes = {k: v for k, v in document.items() if k not in _COLUMN_FIELDS}
    return CanonicalEvent(
        tenant=meta.tenant,
        source=SOURCE,
        event_type=EVENT_TYPES[event.event_key],
        # "System assigns one unique id if empty": ours is derived, so a retried request keeps it.
        event_id=event.event_id or derive_event_id(SOURCE, meta.tenant, ROUTE, raw_event),
        occurred_at=received_at if event.server_time is None else from_epoch_seconds(event.server_time),
        received_at=received_at,
        raw=raw_event,
        user_id=_text(event.user_id),
        anonymous_id=_text(event.cookie_id),
        product_id=None if is_order else target,
        order_id=target if is_order else None,
        quantity=event.item_count,
        price=event.price,
        currency=event.currency,
        attributes=attributes or None,
    )


FORMAT = ImpressionFormat()
