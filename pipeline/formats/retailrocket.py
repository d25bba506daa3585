"""Retail Rocket's HTTP tracking API (`POST /1.0/<method>?apiKey=&partnerId=`): one Struct per method, the
`visitorEvents` batch of one-key envelopes, the replies, and the split into canonical events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from pipeline.canonical import CanonicalEvent, derive_event_id
from pipeline.errors import InvalidEvent
from pipeline.formats import common
from pipeline.formats.base import Accepted, Problem, Rejection, Reply, Route
from pipeline.formats.common import Money, parse_money
from pipeline.record import RecordMeta

SOURCE = "retailrocket"
BATCH = "visitorEvents"

# Where a rule below does not come from the seed (shared/seeds/retailrocket-tracking-api.ru.md):
# - `timestamp` is optional, ISO 8601, server time when absent: "Метка времени вызова" in
#   integraciya-s-retail-rocket/obshie-principy-integracii-s-retail-rocket.md of RetailRocket/Documentation
#   (the older http-tracking-api.md there also marks it required=false).
# - `sessionExternalId` at most 50 characters: "Управление сессией" in the same file. Its "letters and digits
#   only" is not enforced: the same page recommends a GUID, and clients send it with hyphens.
# - categoryViewByCategoryPath, welcomeSequence, emailClick are not in the stored copies of that repository
#   (only the method names are known). Their fields follow Retail Rocket's public docs elsewhere:
#   `categoryPath` is the full "Women/Clothing/Skirts" path of the product API (docs.retailrocket.net,
#   "Using categories in requests"); welcomeSequence takes the visitor's email (rrApi.welcomeSequence(email)
#   of the JS SDK). emailClick has no documented body, so it needs only what every method has; all else
#   is kept in `attributes`.
# - The docs ask for `Content-Type: application/json` but document no 415, and web trackers post
#   text/plain to dodge CORS preflights: requires_json_content_type is False.

NonEmpty = Annotated[str, Meta(min_length=1)]
SessionId = Annotated[str, Meta(min_length=1, max_length=50)]
# The seed: "only letters and digits, at most 50 characters". \Z, not $: $ would let a trailing newline in.
ContactId = Annotated[str, Meta(pattern=r"\A[^\W_]+\Z", max_length=50)]
# The seed: "recomBlockId - any string up to 50 characters".
RecomBlockId = Annotated[str, Meta(min_length=1, max_length=50)]
# Quantity lands in an INTEGER column: keep it within int64.
Quantity = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class EventTime:
    """A `timestamp` that parsed as ISO 8601, held in UTC. A custom type so that a bad value is reported by
    msgspec at its own path (`$[3].view.timestamp`)."""

    __slots__ = ("utc",)

    def __init__(self, utc: datetime) -> None:
        self.utc = utc


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is EventTime:
        if not isinstance(value, str):
            raise TypeError("Expected an ISO 8601 timestamp string")
        try:
            return EventTime(common.parse_iso8601(value))
        except (ValueError, OverflowError):
            raise ValueError("Invalid ISO 8601 timestamp") from None
    if type_ is Money:
        return parse_money(value)
    raise NotImplementedError


class _Event(msgspec.Struct, kw_only=True, rename="camel"):
    """What every tracking method carries. Unknown fields are ignored here and kept by to_canonical."""

    session_external_id: SessionId
    stock_id: str | int | None = None
    timestamp: EventTime | None = None


class ViewEvent(_Event, kw_only=True):
    product_id: int


class GroupViewEvent(_Event, kw_only=True):
    group_id: int
    product_ids: list[int]


class AddToBasketEvent(_Event, kw_only=True):
    product_id: int


class CategoryViewEvent(_Event, kw_only=True):
    category_id: int


class CategoryViewByCategoryPathEvent(_Event, kw_only=True):
    category_path: NonEmpty


class OrderEvent(_Event, kw_only=True):
    product_id: int
    price: Money
    quantity: Quantity
    # Documented as a string; shops send their numeric order ids as numbers too.
    transaction: NonEmpty | int


class SearchEvent(_Event, kw_only=True):
    search_phrase: NonEmpty


class SetContactEvent(_Event, kw_only=True):
    contact_external_id: ContactId
    # The seed types email as integer: a typo of the document, an address is a string.
    email: str | None = None
    phone: str | int | None = None
    # Documented as a string; any JSON shape is kept as sent.
    custom_data: Any = None


class WelcomeSequenceEvent(_Event, kw_only=True):
    email: NonEmpty


class EmailClickEvent(_Event, kw_only=True):
    pass


class RecomBlockViewedEvent(_Event, kw_only=True):
    recom_block_id: RecomBlockId


class RecomTapEvent(_Event, kw_only=True):
    product_id: int
    recom_block_id: RecomBlockId


class RecomAddToBasketEvent(_Event, kw_only=True):
    product_id: int
    recom_block_id: RecomBlockId


class ImpressionContentViewedEvent(_Event, kw_only=True):
    impression_content_id: NonEmpty


class ImpressionContentClickedEvent(_Event, kw_only=True):
    impression_content_id: NonEmpty


# method -> (its Struct, the canonical event_type); the order is the routes' order.
METHODS: dict[str, tuple[type[_Event], str]] = {
    "view": (ViewEvent, "product_view"),
    "groupView": (GroupViewEvent, "product_group_view"),
    "addToBasket": (AddToBasketEvent, "add_to_cart"),
    "categoryView": (CategoryViewEvent, "category_view"),
    "categoryViewByCategoryPath": (CategoryViewByCategoryPathEvent, "category_view"),
    "order": (OrderEvent, "purchase"),
    "search": (SearchEvent, "search"),
    "setContact": (SetContactEvent, "set_contact"),
    "welcomeSequence": (WelcomeSequenceEvent, "welcome_sequence"),
    "emailClick": (EmailClickEvent, "email_click"),
    "recomBlockViewed": (RecomBlockViewedEvent, "recommendation_view"),
    "recomTap": (RecomTapEvent, "recommendation_click"),
    "recomAddToBasket": (RecomAddToBasketEvent, "recommendation_add_to_cart"),
    "impressionContentViewed": (ImpressionContentViewedEvent, "impression"),
    "impressionContentClicked": (ImpressionContentClickedEvent, "click"),
}


class Envelope(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """One element of a visitorEvents batch: exactly one key, naming the method of the event it holds.
    UNSET rather than None, so `{"view": null}` is a type error at `$[i].view`, not a missing event."""

    view: ViewEvent | UnsetType = UNSET
    group_view: GroupViewEvent | UnsetType = UNSET
    add_to_basket: AddToBasketEvent | UnsetType = UNSET
    category_view: CategoryViewEvent | UnsetType = UNSET
    category_view_by_category_path: CategoryViewByCategoryPathEvent | UnsetType = UNSET
    order: OrderEvent | UnsetType = UNSET
    search: SearchEvent | UnsetType = UNSET
    set_contact: SetContactEvent | UnsetType = UNSET
    welcome_sequence: WelcomeSequenceEvent | UnsetType = UNSET
    email_click: EmailClickEvent | UnsetType = UNSET
    recom_block_viewed: RecomBlockViewedEvent | UnsetType = UNSET
    recom_tap: RecomTapEvent | UnsetType = UNSET
    recom_add_to_basket: RecomAddToBasketEvent | UnsetType = UNSET
    impression_content_viewed: ImpressionContentViewedEvent | UnsetType = UNSET
    impression_content_clicked: ImpressionContentClickedEvent | UnsetType = UNSET

    def __post_init__(self) -> None:
        found = sum(getattr(self, name) is not UNSET for name in self.__struct_fields__)
        if found != 1:
            raise ValueError(f"An envelope must hold exactly one event method key, found {found}")


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    # float_hook: JSON numbers reach Money as exact Decimals, never through a float.
    return msgspec.json.Decoder(type_, dec_hook=_dec_hook, float_hook=Decimal)


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {m: _decoder(t) for m, (t, _) in METHODS.items()}
_BATCH_DECODER: msgspec.json.Decoder[list[Envelope]] = _decoder(list[Envelope])
# Cheap second passes for to_canonical: each event's exact bytes, and all its fields (unknown ones too).
_RAW_DECODER = msgspec.json.Decoder(msgspec.Raw)
_RAW_BATCH_DECODER = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
_FIELDS_DECODER = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)

# Fields that have a column of their own; every other field of an event goes to `attributes`.
_COLUMN_FIELDS = frozenset(
    {
        "sessionExternalId",
        "productId",
        "productIds",
        "categoryId",
        "transaction",
        "quantity",
        "price",
        "searchPhrase",
        "recomBlockId",
        "timestamp",
    }
)


def _own_column_fields(event_type: type[_Event]) -> frozenset[str]:
    """The fields of a method that fill a column. Another method's column field sent here (Retail Rocket's
    own order sample posted to addToBasket carries quantity, price, transaction) has no column on this
    event, so it stays in attributes instead of being dropped."""
    return _COLUMN_FIELDS & {field.encode_name for field in msgspec.structs.fields(event_type)}


_METHOD_COLUMN_FIELDS: dict[str, frozenset[str]] = {m: _own_column_fields(t) for m, (t, _) in METHODS.items()}

ROUTES: tuple[Route, ...] = tuple(Route(f"/1.0/{m}", m) for m in (*METHODS, BATCH))
# The receiver may name a route by its name or its path.
_ROUTE_NAMES: dict[str, str] = {r.name: r.name for r in ROUTES} | {r.path: r.name for r in ROUTES}

_OK = Reply(status=200, body=b"", content_type=None)

# Auth replies never echo what the receiver put in the message (it may quote the key).
_AUTH_MESSAGES: dict[Problem, str] = {
    Problem.UNAUTHENTICATED: "apiKey and partnerId are required",
    Problem.INVALID_CREDENTIALS: "apiKey is not valid",
    Problem.FORBIDDEN: "apiKey is not valid for this partnerId",
}


def _as_event_time(rejection: Rejection) -> Rejection:
    """A timestamp msgspec could not read is an event-time problem, not a generic type error."""
    if rejection.problem is Problem.INVALID and (rejection.path or "").endswith(".timestamp"):
        return Rejection(Problem.EVENT_TIME, rejection.message, rejection.path)
    return rejection


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class RetailRocketFormat:
    source = SOURCE
    routes = ROUTES
    requires_json_content_type = False
    request_types: Mapping[str, Any] = {
        **{method: event_type for method, (event_type, _) in METHODS.items()},
        "visitorEvents": list[Envelope],
    }

    def validate(
        self, body: bytes, route: str, received_at: datetime, future_skew_seconds: float
    ) -> Accepted:
        # No receiver-side window: Retail Rocket documents none, and the consumer's window judges late and
        # future events against the record's received_at.
        method = _ROUTE_NAMES[route]
        try:
            if method == BATCH:
                envelopes = common.decode(_BATCH_DECODER, body)
                if not envelopes:
                    raise Rejection(Problem.EMPTY, "visitorEvents holds no events", "$")
                return Accepted(events=len(envelopes), reply=_OK)
            common.decode(_DECODERS[method], body)
            return Accepted(events=1, reply=_OK)
        except Rejection as rejection:
            refined = _as_event_time(rejection)
            if refined is rejection:
                raise
            raise refined from rejection

    def error(self, rejection: Rejection) -> Reply:
        status = common.DEFAULT_STATUS[rejection.problem]
        message = _AUTH_MESSAGES.get(rejection.problem, rejection.message)
        # A body that is not JSON at all has no field to name: the path is the whole body.
        path = "$" if rejection.path is None and status == 400 else rejection.path
        if message is not rejection.message or path != rejection.path:
            rejection = Rejection(rejection.problem, message, path, rejection.retry_after)
        return common.generic_error(status, rejection)

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        method = _ROUTE_NAMES.get(meta.route)
        if method is None:
            raise InvalidEvent("undecodable", f"unknown Retail Rocket route {meta.route!r}")
        received_at = meta.received_at
        try:
            body.decode("utf-8")
            if method == BATCH:
                pairs = [
                    _only_entry(envelope, index)
                    for index, envelope in enumerate(_RAW_BATCH_DECODER.decode(body))
                ]
            else:
                pairs = [(method, _RAW_DECODER.decode(body))]
            return [_canonical(m, bytes(raw), meta, received_at) for m, raw in pairs]
        except (UnicodeDecodeError, msgspec.DecodeError, RecursionError) as exc:
            raise InvalidEvent("undecodable", f"Retail Rocket {method} body: {exc}") from exc


def _only_entry(envelope: dict[str, msgspec.Raw], index: int) -> tuple[str, msgspec.Raw]:
    if len(envelope) != 1:
        raise InvalidEvent("undecodable", f"visitorEvents envelope $[{index}] has {len(envelope)} keys")
    ((method, raw),) = envelope.items()
    if method not in METHODS:
        raise InvalidEvent("undecodable", f"visitorEvents envelope $[{index}] names no method")
    return method, raw


def _canonical(method: str, raw: bytes, meta: RecordMeta, received_at: datetime) -> CanonicalEvent:
    event = _DECODERS[method].decode(raw)
    fields = _FIELDS_DECODER.decode(raw)
    columns = _METHOD_COLUMN_FIELDS[method]
    attributes = {name: value for name, value in fields.items() if name not in columns}
    product_ids = getattr(event, "product_ids", None)
    price = getattr(event, "price", None)
    recom_block_id = getattr(event, "recom_block_id", None)
    return CanonicalEvent(
        tenant=meta.tenant,
        source=SOURCE,
        event_type=METHODS[method][1],
        # Keyed by the method, not the route, so an event gets the same id alone and inside visitorEvents.
        event_id=derive_event_id(SOURCE, meta.tenant, method, raw),
        occurred_at=event.timestamp.utc if event.timestamp is not None else received_at,
        received_at=received_at,
        raw=raw,
        anonymous_id=event.session_external_id,
        product_id=_str_or_none(getattr(event, "product_id", None)),
        product_ids=[str(p) for p in product_ids] if product_ids is not None else None,
        category_id=_str_or_none(getattr(event, "category_id", None)),
        order_id=_str_or_none(getattr(event, "transaction", None)),
        quantity=getattr(event, "quantity", None),
        price=Decimal(price) if price is not None else None,
        search_query=getattr(event, "search_phrase", None),
        placement={"recomBlockId": recom_block_id} if recom_block_id is not None else None,
        attributes=attributes or None,
    )


FORMAT = RetailRocketFormat()
