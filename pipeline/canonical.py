"""The canonical event: one row of the sink's `events` table, whatever vendor it came from."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

# Fixed namespace for derived event ids; changing it would change every derived id already stored.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c7a52-9d0e-4c43-8a43-2f4f0b6d7e11")

COLUMNS = (
    "tenant",
    "source",
    "event_type",
    "event_id",
    "occurred_at",
    "received_at",
    "stored_at",
    "user_id",
    "anonymous_id",
    "product_id",
    "product_ids",
    "category_id",
    "vendor_id",
    "order_id",
    "quantity",
    "price",
    "currency",
    "search_query",
    "placement",
    "items",
    "attributes",
    "raw",
)


class CanonicalEvent(msgspec.Struct, kw_only=True):
    """One event, vendor-neutral. `raw` is the vendor's JSON for this one event, as received; JSON-ish
    columns hold already-decoded values and are encoded by the sink."""

    tenant: str
    source: str
    event_type: str
    event_id: str
    occurred_at: datetime
    received_at: datetime
    raw: bytes
    user_id: str | None = None
    anonymous_id: str | None = None
    product_id: str | None = None
    product_ids: list[str] | None = None
    category_id: str | None = None
    vendor_id: str | None = None
    order_id: str | None = None
    quantity: int | None = None
    price: Decimal | None = None
    currency: str | None = None
    search_query: str | None = None
    placement: dict[str, Any] | None = None
    items: list[Any] | None = None
    attributes: dict[str, Any] | None = None

    def dedup_key(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.source, self.event_type, self.event_id)


_sorted_encoder = msgspec.json.Encoder(order="sorted")


def derive_event_id(source: str, tenant: str, route: str, raw_event: bytes) -> str:
    """A deterministic UUIDv5 for vendors without an event id: the same event in a retried request gets
    the same id, whatever whitespace or key order the client used."""
    canonical = _sorted_encoder.encode(msgspec.json.decode(raw_event))
    name = "\x1f".join((source, tenant, route, canonical.decode()))
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))
