"""DFINERY's S2S Event API: one app or web event per `POST /api/v1/events`, with predefined and
custom properties as the document's examples send them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from random import Random
from typing import Any

from eventpipe.loadgen.vendors.base import (
    Body,
    Draft,
    Visit,
    Weighted,
    encode,
    epoch_ms,
    random_uuid,
)

SOURCE = "dfinery"
NAMES = Weighted(
    [
        ("view_product", 35.0),
        ("login", 15.0),
        ("add_to_cart", 15.0),
        ("search", 10.0),
        ("add_to_wishlist", 10.0),
        ("purchase", 10.0),
        ("sign_up", 5.0),
    ]
)
PAYMENT = ("CreditCard", "MobilePayment", "BankTransfer")


def _item(rng: Random) -> dict[str, Any]:
    return {
        "product_id": str(rng.randrange(1_000_000, 9_999_999)),
        "product_name": f"Product {rng.randrange(1000)}",
        "category1": rng.choice(("fashion", "beauty", "food", "digital")),
        "quantity": rng.randint(1, 3),
        "price": float(rng.randrange(1_000, 200_000, 100)),
    }


class DfineryTraffic:
    source = SOURCE
    max_batch = 1
    receiver_refuses_future = False

    def draft(self, rng: Random, visit: Visit, when: datetime, index: int, *, may_omit_time: bool) -> Draft:
        name = NAMES.pick(rng)
        event: dict[str, Any] = {
            "event_id": random_uuid(rng),
            "event_name": name,
            "event_datetime": epoch_ms(when),
        }
        if name == "purchase":
            items = [_item(rng) for _ in range(rng.randint(1, 3))]
            event["order_id"] = str(rng.randrange(10**8, 10**9))
            event["order_sales"] = sum(i["price"] * i["quantity"] for i in items)
            event["payment_method"] = rng.choice(PAYMENT)
            event["items"] = items
        elif name in ("view_product", "add_to_cart", "add_to_wishlist"):
            event["items"] = [_item(rng)]
        event["source_type"] = rng.choice(("app", "web"))
        user: dict[str, Any] = {"user_id": visit.user_id}
        if rng.random() < 0.3:
            user["membership"] = rng.choice(("silver", "gold"))
        raw = encode({"event_attributes": event, "user_attributes": user})
        return Draft(SOURCE, name, "events", raw, event["event_id"])

    def breakers(self, event: dict[str, Any], group: str) -> list[Callable[[], object]]:
        attributes, user = event["event_attributes"], event["user_attributes"]
        return [
            lambda: attributes.update(event_id="not-a-uuid"),
            lambda: attributes.update(event_datetime="2024-01-01 10:00:00"),
            lambda: user.pop("user_id"),
            lambda: attributes.update(campaign={"id": 7}),  # a custom property must be a scalar
        ]

    def request(self, drafts: Sequence[Draft], batched: bool) -> Body:
        (draft,) = drafts
        return Body("/api/v1/events", "events", draft.raw)
