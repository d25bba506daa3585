"""Retail Rocket's tracking API: a shop's visitors browsing, searching, adding to the basket and
ordering, one method per request (`/1.0/view`, ...) or a `visitorEvents` batch of envelopes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from random import Random
from typing import Any

from eventpipe.loadgen.vendors.base import Body, Draft, Visit, Weighted, encode, iso
from pipeline.canonical import derive_event_id
from pipeline.formats.retailrocket import BATCH, METHODS

SOURCE = "retailrocket"
OMIT_TIME_SHARE = 0.1
# How often a shop's tracker calls each method.
MIX = Weighted(
    [
        ("view", 30.0),
        ("categoryView", 10.0),
        ("addToBasket", 9.0),
        ("search", 8.0),
        ("recomBlockViewed", 8.0),
        ("groupView", 5.0),
        ("recomTap", 5.0),
        ("order", 4.0),
        ("impressionContentViewed", 4.0),
        ("categoryViewByCategoryPath", 3.0),
        ("recomAddToBasket", 3.0),
        ("impressionContentClicked", 2.0),
        ("setContact", 1.0),
        ("emailClick", 1.0),
        ("welcomeSequence", 0.5),
    ]
)
SEARCHES = ("платье", "кроссовки", "подгузник для новорожденных", "phone case", "sofa")
PATHS = ("Women/Clothing/Skirts", "Men/Shoes/Sneakers", "Home/Kitchen/Knives", "Kids/Toys")


def _product(rng: Random) -> int:
    return rng.randrange(100_000, 999_999)


def _fields(rng: Random, method: str, visit: Visit) -> dict[str, Any]:
    """The method's own fields."""
    block = f"rb{rng.randrange(1000, 9999)}"
    content = f"ic-{rng.getrandbits(32):08x}"
    email = f"{visit.user_id}@example.com"
    match method:
        case "view" | "addToBasket":
            return {"productId": _product(rng)}
        case "groupView":
            return {"groupId": rng.randrange(1000, 9999), "productIds": [_product(rng) for _ in range(3)]}
        case "categoryView":
            return {"categoryId": rng.randrange(1, 500)}
        case "categoryViewByCategoryPath":
            return {"categoryPath": rng.choice(PATHS)}
        case "order":
            return {
                "productId": _product(rng),
                "price": round(rng.uniform(100, 20_000), 2),
                "quantity": rng.randint(1, 3),
                "transaction": str(rng.randrange(10**6, 10**7)),
            }
        case "search":
            return {"searchPhrase": rng.choice(SEARCHES)}
        case "setContact":
            return {"contactExternalId": visit.user_id.replace("-", ""), "email": email}
        case "welcomeSequence":
            return {"email": email}
        case "recomBlockViewed":
            return {"recomBlockId": block}
        case "recomTap" | "recomAddToBasket":
            return {"productId": _product(rng), "recomBlockId": block}
        case "impressionContentViewed" | "impressionContentClicked":
            return {"impressionContentId": content}
        case _:
            return {}


class RetailRocketTraffic:
    source = SOURCE
    max_batch = 1000
    receiver_refuses_future = False

    def __init__(self, tenant: str) -> None:
        self._tenant = tenant

    def draft(self, rng: Random, visit: Visit, when: datetime, index: int, *, may_omit_time: bool) -> Draft:
        method = MIX.pick(rng)
        event: dict[str, Any] = {"sessionExternalId": visit.session_id, **_fields(rng, method, visit)}
        if rng.random() < 0.3:
            event["stockId"] = rng.choice(("Moscow", "NewYork", "Berlin"))
        # Only the first event of a request may go without a timestamp (server time): the others
        # differ from each other by their timestamps' milliseconds.
        if not (may_omit_time and index == 0 and rng.random() < OMIT_TIME_SHARE):
            event["timestamp"] = iso(when)
        raw = encode(event)
        # Keyed by the method, as the consumer keys it (alone or inside visitorEvents alike).
        event_id = derive_event_id(SOURCE, self._tenant, method, raw)
        return Draft(SOURCE, METHODS[method][1], method, raw, event_id)

    def breakers(self, event: dict[str, Any], group: str) -> list[Callable[[], object]]:
        choices: list[Callable[[], object]] = [
            lambda: event.pop("sessionExternalId"),
            lambda: event.update(sessionExternalId="s" * 51),
            lambda: event.update(timestamp="not a time"),
        ]
        if "productId" in event:
            choices.append(lambda: event.update(productId="abc"))
        return choices

    def request(self, drafts: Sequence[Draft], batched: bool) -> Body:
        if not batched and len(drafts) == 1:
            method = drafts[0].group
            return Body(f"/1.0/{method}", method, drafts[0].raw)
        envelopes = b",".join(b'{"%s":%s}' % (d.group.encode(), d.raw) for d in drafts)
        return Body(f"/1.0/{BATCH}", BATCH, b"[" + envelopes + b"]")
