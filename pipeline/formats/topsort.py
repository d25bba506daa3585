"""Topsort events v2 (`POST /v2/events`, `/events`): schema, replies, and the split into canonical events."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from pipeline.canonical import CanonicalEvent
from pipeline.errors import InvalidEvent
from pipeline.formats.base import Accepted, Problem, Rejection, Reply, Route
from pipeline.formats.common import decode, describe, json_reply, retry_headers
from pipeline.record import RecordMeta

SOURCE: Final = "topsort"
DOC_URL: Final = "https://docs.topsort.com/reference/errors"
# Per array, from the seed reference and Topsort/openapi topsort-api-v2.yml (EventsRequest.maxItems).
MAX_EVENTS: Final = 50

T = TypeVar("T")
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
OffsetTimestamp = Annotated[datetime, msgspec.Meta(tz=True)]
# The OpenAPI says minItems 1 per array; DESIGN.md accepts an empty array beside a non-empty one and
# answers `empty_request` only when every array is empty or absent.
Batch = Annotated[list[T], msgspec.Meta(max_length=MAX_EVENTS)] | None


# topsort.kt up to 1.1.0 sent its enum's names, "Product" and "Vendor" (model/Entity.kt: `type.name`);
# later releases send "product" / "vendor" and still read the capitalised names back from their on-device
# cache. Accepted and stored lowercase: the case carries no meaning (docs/FIDELITY.md).
SentEntityType = Literal["product", "vendor", "Product", "Vendor"]


class Entity(msgspec.Struct, kw_only=True):
    id: NonEmptyStr
    type: SentEntityType

    def __post_init__(self) -> None:
        self.type = "product" if self.type in ("product", "Product") else "vendor"


class Placement(msgspec.Struct, kw_only=True, rename="camel"):
    path: NonEmptyStr
    position: PositiveInt | None = None
    page: PositiveInt | None = None
    page_size: PositiveInt | None = None
    product_id: NonEmptyStr | None = None
    category_ids: Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)] | None = None
    search_query: NonEmptyStr | None = None
    # The seed example and an earlier OpenAPI (Topsort/openapi at ab9bf13) send a single `categoryId`.
    category_id: NonEmptyStr | None = None


class Event(msgspec.Struct, kw_only=True, rename="camel"):
    id: NonEmptyStr
    occurred_at: OffsetTimestamp
    opaque_user_id: NonEmptyStr

    def __post_init__(self) -> None:
        # Normalised once, here: an offset that overflows in UTC (year 1 at +01:00) is refused, not stored.
        try:
            self.occurred_at = self.occurred_at.astimezone(UTC)
        except OverflowError:
            raise ValueError("`occurredAt` is out of range") from None


class Interaction(Event, kw_only=True):
    """An impression or a click."""

    resolved_bid_id: str | None = None
    entity: Entity | None = None
    placement: Placement | None = None
    additional_attribution: Entity | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.additional_attribution is not None and self.resolved_bid_id is None:
            # Seed reference: "When using this field, the resolvedBidId must also exist in the event body."
            raise ValueError("`additionalAttribution` requires resolvedBidId in the same event")


# Unbounded precision keeps sums of prices exact; the double range checked below bounds their size.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class PurchaseItem(msgspec.Struct, kw_only=True, rename="camel"):
    product_id: NonEmptyStr
    # Decimal takes JSON numbers exactly and numeric strings too (analytics.js sends "2399").
    unit_price: Decimal
    quantity: PositiveInt = 1
    vendor_id: NonEmptyStr | None = None

    def __post_init__(self) -> None:
        # `format: double` with `exclusiveMinimum: 0` in the OpenAPI: the value must be a positive double.
        price = self.unit_price
        if not price.is_finite() or not 0 < float(price) < math.inf:
            raise ValueError("`unitPrice` must be a number greater than 0 (within double range)")


class Render(Event, kw_only=True):
    """An ad inserted into the page, seen or not: sponsored only, so resolvedBidId is required. Not in the
    seed reference; Topsort's own SDKs send it (topsort.js types/events.d.ts `renders`, analytics.js 2.x,
    topsort.kt model/RenderEvent.kt)."""

    resolved_bid_id: NonEmptyStr
    placement: Placement | None = None


class Purchase(Event, kw_only=True):
    items: Annotated[list[PurchaseItem], msgspec.Meta(min_length=1)]


class Page(msgspec.Struct, kw_only=True, rename="camel"):
    """Topsort/openapi `Page`: required on a pageview."""

    type: Literal["home", "category", "PDP", "search", "cart", "other"]
    page_id: str
    value: str | Annotated[list[str], msgspec.Meta(min_length=1)] | None = None


class Pageview(Event, kw_only=True):
    page: Page


class EventsRequest(msgspec.Struct, kw_only=True):
    impressions: Batch[Interaction] = None
    clicks: Batch[Interaction] = None
    purchases: Batch[Purchase] = None
    pageviews: Batch[Pageview] = None
    renders: Batch[Render] = None

    def batches(
        self,
    ) -> tuple[tuple[str, list[Interaction] | list[Purchase] | list[Pageview] | list[Render]], ...]:
        return (
            ("impressions", self.impressions or []),
            ("clicks", self.clicks or []),
            ("purchases", self.purchases or []),
            ("pageviews", self.pageviews or []),
            ("renders", self.renders or []),
        )


class RawEventsRequest(msgspec.Struct, kw_only=True):
    """The same body with each event left as its own bytes, for `raw` and the unknown fields."""

    impressions: list[msgspec.Raw] | None = None
    clicks: list[msgspec.Raw] | None = None
    purchases: list[msgspec.Raw] | None = None
    pageviews: list[msgspec.Raw] | None = None
    renders: list[msgspec.Raw] | None = None


_DECODER = msgspec.json.Decoder(EventsRequest)
_RAW_DECODER = msgspec.json.Decoder(RawEventsRequest)
_INTERACTION_DECODER = msgspec.json.Decoder(Interaction)
_PURCHASE_DECODER = msgspec.json.Decoder(Purchase)
_PAGEVIEW_DECODER = msgspec.json.Decoder(Pageview)
_RENDER_DECODER = msgspec.json.Decoder(Render)
# Every JSON number as an exact Decimal, so the JSON columns never hold a float.
_DOCUMENT_DECODER = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)

_EVENT_KEYS = frozenset({"id", "occurredAt", "opaqueUserId"})
_SUCCESS = Reply(204, b"", content_type=None)

# status, errCode
_ERRORS: Final[dict[Problem, tuple[int, str]]] = {
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
# Problems whose detail could carry what a client must never see (keys, broker errors, stack traces).
_FIXED_MESSAGES: Final[dict[Problem, str]] = {
    Problem.UNAUTHENTICATED: "missing API key: send the header Authorization: Bearer <API key>",
    Problem.INVALID_CREDENTIALS: "invalid API key",
    Problem.FORBIDDEN: "this API key may not report these events",
    Problem.UNAVAILABLE: "service temporarily unavailable, retry later",
    Problem.INTERNAL: "internal server error",
}


def _decode_request(body: bytes) -> EventsRequest:
    return decode(_DECODER, body)


class TopsortFormat:
    request_types: Mapping[str, Any] = {"events": EventsRequest}
    source: str = SOURCE
    routes: tuple[Route, ...] = (Route("/v2/events", "events"), Route("/events", "events"))
    requires_json_content_type: bool = True

    def validate(
        self, body: bytes, route: str, received_at: datetime, future_skew_seconds: float
    ) -> Accepted:
        request = _decode_request(body)
        batches = request.batches()
        count = sum(len(events) for _, events in batches)
        if count == 0:
            raise Rejection(
                Problem.EMPTY,
                "no events: impressions, clicks, purchases, pageviews and renders are all empty",
                "$",
            )
        latest = received_at + timedelta(seconds=future_skew_seconds)
        for name, events in batches:
            for index, event in enumerate(events):
                if event.occurred_at > latest:
                    raise Rejection(
                        Problem.EVENT_TIME,
                        f"occurredAt {event.occurred_at.isoformat()} is more than {future_skew_seconds:g} s "
                        "in the future",
                        f"$.{name}[{index}].occurredAt",
                    )
        return Accepted(events=count, reply=_SUCCESS)

    def error(self, rejection: Rejection) -> Reply:
        status, code = _ERRORS[rejection.problem]
        message = _FIXED_MESSAGES.get(rejection.problem) or describe(rejection)
        headers = retry_headers(rejection)
        if rejection.problem is Problem.RATE_LIMITED and not headers:
            headers = {"Retry-After": "1"}
        return json_reply(status, {"errCode": code, "docUrl": DOC_URL, "message": message}, headers)

    def to_canonical(self, body: bytes, meta: RecordMeta) -> list[CanonicalEvent]:
        try:
            raw_request = _RAW_DECODER.decode(body)
            received_at = meta.received_at
            events: list[CanonicalEvent] = []
            for raw in raw_request.impressions or ():
                events.append(_interaction("impression", raw, meta, received_at))
            for raw in raw_request.clicks or ():
                events.append(_interaction("click", raw, meta, received_at))
            for raw in raw_request.purchases or ():
                events.append(_purchase(raw, meta, received_at))
            for raw in raw_request.pageviews or ():
                events.append(_pageview(raw, meta, received_at))
            for raw in raw_request.renders or ():
                events.append(_render(raw, meta, received_at))
        except (msgspec.DecodeError, RecursionError, ValueError, OverflowError) as exc:
            # msgspec.ValidationError is a DecodeError: a body the receiver would have refused.
            raise InvalidEvent("undecodable", f"topsort body: {exc}") from exc
        return events


def _base(
    event_type: str, event: Event, raw: msgspec.Raw, meta: RecordMeta, received_at: datetime
) -> CanonicalEvent:
    return CanonicalEvent(
        tenant=meta.tenant,
        source=SOURCE,
        event_type=event_type,
        event_id=event.id,
        occurred_at=event.occurred_at,
        received_at=received_at,
        raw=bytes(raw),
        anonymous_id=event.opaque_user_id,
    )


def _rest(document: dict[str, Any], *taken: str) -> dict[str, Any] | None:
    rest = {k: v for k, v in document.items() if k not in _EVENT_KEYS and k not in taken}
    return rest or None


def _with_entity_types(document: dict[str, Any], *entities: tuple[str, Entity | None]) -> dict[str, Any]:
    """The document with each entity's `type` as normalised (lowercase), the rest as sent."""
    for name, entity in entities:
        sent = document.get(name)
        if entity is not None and isinstance(sent, dict):
            document[name] = {**sent, "type": entity.type}
    return document


def _placement_columns(row: CanonicalEvent, placement: Placement | None, document: dict[str, Any]) -> None:
    if placement is not None:
        row.category_id = placement.category_id or (
            placement.category_ids[0] if placement.category_ids else None
        )
        row.search_query = placement.search_query
        row.placement = document.get("placement")


def _interaction(
    event_type: str, raw: msgspec.Raw, meta: RecordMeta, received_at: datetime
) -> CanonicalEvent:
    event = _INTERACTION_DECODER.decode(raw)
    document = _with_entity_types(
        _DOCUMENT_DECODER.decode(raw),
        ("entity", event.entity),
        ("additionalAttribution", event.additional_attribution),
    )
    row = _base(event_type, event, raw, meta, received_at)
    placement = event.placement
    entity = event.entity
    if entity is not None and entity.type == "product":
        row.product_id = entity.id
    elif placement is not None:
        row.product_id = placement.product_id
    if entity is not None and entity.type == "vendor":
        row.vendor_id = entity.id
    _placement_columns(row, placement, document)
    row.attributes = _rest(document, "placement")
    return row


def _render(raw: msgspec.Raw, meta: RecordMeta, received_at: datetime) -> CanonicalEvent:
    event = _RENDER_DECODER.decode(raw)
    document = _DOCUMENT_DECODER.decode(raw)
    row = _base("render", event, raw, meta, received_at)
    if event.placement is not None:
        row.product_id = event.placement.product_id
    _placement_columns(row, event.placement, document)
    row.attributes = _rest(document, "placement")
    return row


def _purchase(raw: msgspec.Raw, meta: RecordMeta, received_at: datetime) -> CanonicalEvent:
    event = _PURCHASE_DECODER.decode(raw)
    document = _DOCUMENT_DECODER.decode(raw)
    row = _base("purchase", event, raw, meta, received_at)
    row.order_id = event.id
    row.items = [
        {**sent, "unitPrice": item.unit_price, "quantity": item.quantity}
        for sent, item in zip(document["items"], event.items, strict=True)
    ]
    total = Decimal(0)
    for item in event.items:
        total = _EXACT.add(total, _EXACT.multiply(item.unit_price, Decimal(item.quantity)))
    row.price = total
    row.quantity = sum(item.quantity for item in event.items)
    row.product_ids = [item.product_id for item in event.items]
    vendors = {item.vendor_id for item in event.items}
    if len(vendors) == 1:
        row.vendor_id = vendors.pop()
    row.attributes = _rest(document, "items")
    return row


def _pageview(raw: msgspec.Raw, meta: RecordMeta, received_at: datetime) -> CanonicalEvent:
    event = _PAGEVIEW_DECODER.decode(raw)
    document = _DOCUMENT_DECODER.decode(raw)
    row = _base("page_view", event, raw, meta, received_at)
    row.attributes = _rest(document)
    return row


FORMAT = TopsortFormat()
