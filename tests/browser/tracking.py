"""What the shop's pages send: Topsort's SDK README example, and Retail Rocket's and the Impression API's
documented bodies as a page posts them (fetch with JSON, or a beacon with a string), each made this
run's own (identities and event ids tagged, times set to now) so that rows can be found and no earlier
run's events deduplicate them. The steps are read by pages/shop.html."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.corpus import API_KEY, PARTNER_ID, Case, load_cases, restamp

README_EVENT = Path(__file__).resolve().parent.parent / "data" / "browser" / "topsort-sdk-readme-event.json"
TOPSORT_ARRAYS = ("impressions", "clicks", "purchases", "pageviews")
IDENTITIES = ("opaqueUserId", "sessionExternalId", "cookie_id", "user_id")


def _tag_identities(node: Any, tag: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in IDENTITIES and isinstance(value, str):
                node[key] = f"{value}-{tag}"
            else:
                _tag_identities(value, tag)
    elif isinstance(node, list):
        for item in node:
            _tag_identities(item, tag)


def readme_event(tag: str, now: datetime) -> dict[str, Any]:
    """The SDK README's reportEvent example: every occurredAt now, ids and users this run's."""
    event: dict[str, Any] = json.loads(README_EVENT.read_text())["event"]
    at = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    for name in TOPSORT_ARRAYS:
        for item in event[name]:
            item["id"] = f"{item['id']}-{tag}"
            item["occurredAt"] = at
    _tag_identities(event, tag)
    return event


def corpus_body(case_id: str, tag: str, now: datetime) -> dict[str, Any]:
    case: Case = next(c for c in load_cases() if c.id == case_id)
    body = copy.deepcopy(restamp(case, now).body_json)
    _tag_identities(body, tag)
    assert isinstance(body, dict)
    return body


def retailrocket_url(receiver: str, method: str) -> str:
    return f"{receiver}/1.0/{method}?{urlencode({'apiKey': API_KEY, 'partnerId': PARTNER_ID})}"


def topsort_sdk(name: str, receiver: str, api_key: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "via": "topsort-sdk", "host": receiver, "apiKey": api_key, "event": event}


def fetch(name: str, url: str, headers: dict[str, str], body: Any, keepalive: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "via": "fetch",
        "url": url,
        "headers": headers,
        "body": json.dumps(body),
        "keepalive": keepalive,
    }


def beacon(name: str, url: str, body: Any) -> dict[str, Any]:
    return {"name": name, "via": "beacon", "url": url, "body": json.dumps(body)}


def as_click(body: dict[str, Any]) -> dict[str, Any]:
    """The Impression API sample's events as clicks: other events than the imps sent beside them."""
    clicks = copy.deepcopy(body)
    for event in clicks["events"]:
        event["event_key"] = "click"
    return clicks
