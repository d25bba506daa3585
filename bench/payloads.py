"""The request bodies of the bench: per vendor, one event per request and full batches, with times
of now (the consumers' 48-hour window must accept them). Event ids carry a placeholder `@R@` that the
e2e load client and the topic pre-fill replace per request, so that no two requests' events collide."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline import tenants

PLACEHOLDER = "@R@"
TENANT = "bench"
PARTNER_ID = "608423a9b126ac6ab3f8f0a5"
API_KEY = "ep_bench_0123456789abcdef01234567"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"  # noqa: S105 - a throw-away tenant of the bench
BATCH = 50


@dataclass(frozen=True)
class Scenario:
    """One kind of request: its vendor, route (with query), headers, body template and event count."""

    name: str
    vendor: str
    path: str
    headers: dict[str, str]
    template: str
    events: int
    batched: bool = field(default=False)
    method: str = field(default="POST")

    def body(self, tag: str = "000000000000") -> bytes:
        """The body with its ids tagged; a tag is 12 hex digits (DFINERY's event_id is a UUID)."""
        return self.template.replace(PLACEHOLDER, tag).encode()


def write_tenants(path: Path) -> Path:
    path.write_text(
        "[[tenants]]\n"
        f'id = "{TENANT}"\n'
        f'api_keys = ["{tenants.key_digest(API_KEY)}"]\n'
        f'retailrocket_partner_ids = ["{PARTNER_ID}"]\n'
        f'jwt_secrets = ["{JWT_SECRET}"]\n'
    )
    return path


def _compact(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _topsort_event(kind: str, i: int, at: str) -> dict[str, object]:
    base: dict[str, object] = {
        "id": f"{kind}-{PLACEHOLDER}-{i}",
        "occurredAt": at,
        "opaqueUserId": f"71303ce0-de89-496d-8270-{i:012d}",
    }
    if kind in ("imp", "clk"):
        base["placement"] = {"path": "/categories/dairy", "position": i % 20 + 1, "page": 1, "pageSize": 20}
        base["entity"] = {"id": f"p-{i}", "type": "product"}
        base["resolvedBidId"] = "WyJiX01mazE1IiwiMTJhNTU4MjgtOGVhZC00Mjk5LTgzMjctY2ViYjAwMmEwZmE4Il0="
    elif kind == "pur":
        base["items"] = [
            {"productId": f"p-{i}", "unitPrice": 12.95, "quantity": 2, "vendorId": "v-1"},
            {"productId": f"p-{i + 1}", "unitPrice": 3.5, "quantity": 1, "vendorId": "v-1"},
        ]
    else:
        base["page"] = {"type": "PDP", "pageId": f"/p/{i}", "value": f"p-{i}"}
    return base


def _topsort(n: int, at: str) -> str:
    if n == 1:
        return _compact({"impressions": [_topsort_event("imp", 0, at)]})
    return _compact(
        {
            "impressions": [_topsort_event("imp", i, at) for i in range(n)],
            "clicks": [_topsort_event("clk", i, at) for i in range(n)],
            "purchases": [_topsort_event("pur", i, at) for i in range(n)],
            "pageviews": [_topsort_event("pv", i, at) for i in range(n)],
        }
    )


def _rr_event(i: int, at: str) -> dict[str, object]:
    # Retail Rocket has no event id: the derived id hashes the event, so the session id carries the tag.
    return {
        "sessionExternalId": f"s{PLACEHOLDER}x{i}",
        "productId": 100000 + i,
        "stockId": "NY",
        "timestamp": at,
    }


def _rr_batch(n: int, at: str) -> str:
    methods = ("view", "addToBasket", "categoryView", "search")
    envelopes = []
    for i in range(n):
        method = methods[i % len(methods)]
        event = _rr_event(i, at)
        if method == "categoryView":
            event.pop("productId")
            event["categoryId"] = 42
        elif method == "search":
            event.pop("productId")
            event["searchPhrase"] = "milk"
        envelopes.append({method: event})
    return _compact(envelopes)


def _dfinery(at_ms: int) -> str:
    return _compact(
        {
            "event_attributes": {
                "event_id": f"6f1c7a52-9d0e-4c43-8a43-{PLACEHOLDER}",
                "event_name": "purchase",
                "event_datetime": at_ms,
                "order_id": "o-1",
                "order_sales": 12.95,
                "items": [{"product_id": "p-1", "price": 12.95, "quantity": 1}],
            },
            "user_attributes": {"user_id": "user-1"},
        }
    )


def _impression(n: int, at_s: int) -> str:
    keys = ("imp", "click", "addCart", "pageView")
    return _compact(
        {
            "events": [
                {
                    "event_key": keys[i % len(keys)],
                    "event_id": f"ev-{PLACEHOLDER}-{i}",
                    "target_id": f"{1111 + i}",
                    "cookie_id": f"c-{i}",
                    "server_time": at_s,
                    "site_id": "shop-a",
                    "section": "main",
                }
                for i in range(n)
            ]
        }
    )


def scenarios(now: datetime | None = None) -> list[Scenario]:
    """Every request kind the receiver figures cover. DFINERY's API takes one event per request."""
    moment = now or datetime.now(UTC)
    at = moment.isoformat(timespec="seconds")
    at_ms = int(moment.timestamp() * 1000)
    jwt = tenants.mint_jwt(TENANT, JWT_SECRET, now=time.time())
    json_h = {"Content-Type": "application/json"}
    bearer = {**json_h, "Authorization": f"Bearer {API_KEY}"}
    rr_query = f"?apiKey={API_KEY}&partnerId={PARTNER_ID}"
    imp_h = {**json_h, "Authorization": f"Bearer {jwt}"}
    return [
        Scenario("topsort-single", "topsort", "/v2/events", bearer, _topsort(1, at), 1),
        Scenario("topsort-batch", "topsort", "/v2/events", bearer, _topsort(BATCH, at), 4 * BATCH, True),
        Scenario(
            "retailrocket-single",
            "retailrocket",
            "/1.0/view" + rr_query,
            json_h,
            _compact(_rr_event(0, at)),
            1,
        ),
        Scenario(
            "retailrocket-batch",
            "retailrocket",
            "/1.0/visitorEvents" + rr_query,
            json_h,
            _rr_batch(BATCH, at),
            BATCH,
            True,
        ),
        Scenario("dfinery-single", "dfinery", "/api/v1/events", bearer, _dfinery(at_ms), 1),
        Scenario(
            "impression-single", "impression", "/upload/impression", imp_h, _impression(1, at_ms // 1000), 1
        ),
        Scenario(
            "impression-batch",
            "impression",
            "/upload/impression",
            imp_h,
            _impression(BATCH, at_ms // 1000),
            BATCH,
            True,
        ),
    ]


def by_name(items: list[Scenario]) -> dict[str, Scenario]:
    return {s.name: s for s in items}


def tag(n: int) -> str:
    return f"{n:012x}"
