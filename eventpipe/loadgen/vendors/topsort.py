"""Topsort events v2: impressions, clicks, pageviews and purchases of marketplace shoppers, batched
into the four arrays of one `POST /v2/events` body as the JS SDK sends them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from random import Random
from typing import Any

from eventpipe.loadgen.vendors.base import Body, Draft, Visit, Weighted, encode, iso, random_uuid

SOURCE = "topsort"
MAX_PER_ARRAY = 50
# array name -> canonical event type, and how often shoppers produce each.
ARRAYS = Weighted(
    [
        (("impressions", "impression"), 0.55),
        (("pageviews", "page_view"), 0.22),
        (("clicks", "click"), 0.15),
        (("purchases", "purchase"), 0.08),
    ]
)
ARRAY_ORDER = ("impressions", "clicks", "purchases", "pageviews")
PAGES = ("home", "category", "PDP", "search", "cart", "other")
SEARCHES = ("milk", "oat milk", "coffee beans", "running shoes", "usb-c cable", "dog food")


def _product(rng: Random) -> str:
    return f"p_{rng.randrange(10_000, 99_999)}"


def _placement(rng: Random) -> dict[str, Any]:
    page = rng.randint(1, 5)
    if rng.random() < 0.4:
        query = rng.choice(SEARCHES)
        return {
            "path": "/search",
            "position": rng.randint(1, 24),
            "page": page,
            "pageSize": 24,
            "searchQuery": query,
        }
    category = f"c_{rng.randrange(100, 999)}"
    return {
        "path": f"/categories/{category}",
        "position": rng.randint(1, 24),
        "page": page,
        "pageSize": 24,
        "categoryIds": [category],
    }


def _interaction(rng: Random, event: dict[str, Any]) -> None:
    event["placement"] = _placement(rng)
    event["entity"] = {"id": _product(rng), "type": "product"}
    if rng.random() < 0.6:
        event["resolvedBidId"] = f"{rng.getrandbits(192):048x}"
    event["deviceType"] = rng.choice(("mobile", "desktop"))


def _purchase(rng: Random, event: dict[str, Any]) -> None:
    event["items"] = [
        {
            "productId": _product(rng),
            "unitPrice": round(rng.uniform(0.5, 250.0), 2),
            "quantity": rng.randint(1, 3),
            "vendorId": f"v_{rng.randrange(100, 999)}",
        }
        for _ in range(rng.randint(1, 4))
    ]


def _pageview(rng: Random, event: dict[str, Any]) -> None:
    kind = rng.choice(PAGES)
    event["page"] = {"type": kind, "pageId": f"/{kind.lower()}/{rng.randrange(1000)}"}


_FILL: dict[str, Callable[[Random, dict[str, Any]], None]] = {
    "impressions": _interaction,
    "clicks": _interaction,
    "purchases": _purchase,
    "pageviews": _pageview,
}


class TopsortTraffic:
    source = SOURCE
    max_batch = MAX_PER_ARRAY
    receiver_refuses_future = True

    def draft(self, rng: Random, visit: Visit, when: datetime, index: int, *, may_omit_time: bool) -> Draft:
        array, event_type = ARRAYS.pick(rng)
        event: dict[str, Any] = {
            "id": random_uuid(rng),
            "occurredAt": iso(when),
            "opaqueUserId": visit.user_id,
        }
        _FILL[array](rng, event)
        return Draft(SOURCE, event_type, array, encode(event), event["id"])

    def breakers(self, event: dict[str, Any], group: str) -> list[Callable[[], object]]:
        choices: list[Callable[[], object]] = [
            lambda: event.pop("opaqueUserId"),
            lambda: event.update(occurredAt="yesterday"),
            lambda: event.update(id=""),
        ]
        if group in ("impressions", "clicks"):
            choices.append(lambda: event["entity"].update(type="category"))
            choices.append(lambda: event["placement"].update(position=0))
        elif group == "purchases":
            choices.append(lambda: event["items"][0].update(unitPrice=0))
        else:
            choices.append(lambda: event["page"].update(type="landing"))
        return choices

    def request(self, drafts: Sequence[Draft], batched: bool) -> Body:
        arrays: dict[str, list[bytes]] = {}
        for draft in drafts:
            arrays.setdefault(draft.group, []).append(draft.raw)
        # Built from each event's own bytes, so the bytes the consumer splits out are these exactly.
        parts = [
            b'"%s":[%s]' % (name.encode(), b",".join(arrays[name])) for name in ARRAY_ORDER if name in arrays
        ]
        return Body("/v2/events", "events", b"{" + b",".join(parts) + b"}")
