"""The Impression API: a recommendation widget's impressions, clicks and orders, several events per
`POST /upload/impression`, with or without the client's own event_id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from random import Random
from typing import Any

from eventpipe.loadgen.vendors.base import Body, Draft, Visit, Weighted, encode, random_uuid
from pipeline.canonical import derive_event_id
from pipeline.formats.impression import EVENT_TYPES, ORDER_KEYS, ROUTE

SOURCE = "impression"
OMIT_TIME_SHARE = 0.2
OWN_ID_SHARE = 0.7
KEYS = Weighted(
    [
        ("imp", 50.0),
        ("click", 15.0),
        ("pageView", 15.0),
        ("addCart", 8.0),
        ("addWish", 4.0),
        ("order", 5.0),
        ("orderPay", 3.0),
    ]
)
SECTIONS = ("main", "detail", "cart", "search")


class ImpressionTraffic:
    source = SOURCE
    max_batch = 1000
    receiver_refuses_future = False

    def __init__(self, tenant: str) -> None:
        self._tenant = tenant

    def draft(self, rng: Random, visit: Visit, when: datetime, index: int, *, may_omit_time: bool) -> Draft:
        key = KEYS.pick(rng)
        event: dict[str, Any] = {"cookie_id": visit.cookie_id}
        if rng.random() < 0.5:
            event["user_id"] = visit.user_id
        if rng.random() < OWN_ID_SHARE:
            event["event_id"] = random_uuid(rng)
        event["event_key"] = key
        # The index suffix keeps the events of one request apart when they carry no id of their own.
        event["target_id"] = f"{rng.randrange(10_000, 99_999)}{index:04d}"
        if not (may_omit_time and rng.random() < OMIT_TIME_SHARE):
            event["server_time"] = int(when.timestamp())
        event["section"] = rng.choice(SECTIONS)
        if key in ORDER_KEYS:
            event["price"] = rng.randrange(1_000, 90_000, 10)
            event["currency"] = "KRW"
            event["item_count"] = rng.randint(1, 4)
        raw = encode(event)
        event_id = event.get("event_id") or derive_event_id(SOURCE, self._tenant, ROUTE, raw)
        return Draft(SOURCE, EVENT_TYPES[key], "events", raw, event_id)

    def breakers(self, event: dict[str, Any], group: str) -> list[Callable[[], object]]:
        choices: list[Callable[[], object]] = [
            lambda: event.update(event_key="purchase"),
            lambda: event.pop("target_id"),
            lambda: event.update(server_time=-5),
            lambda: event.update(item_count=-1),
        ]
        return choices

    def request(self, drafts: Sequence[Draft], batched: bool) -> Body:
        return Body("/upload/impression", ROUTE, b'{"events":[' + b",".join(d.raw for d in drafts) + b"]}")
