"""The bodies of tests/data/sdk_bodies: what each vendor's own SDKs and samples put on the wire (each names
its SDK, version or commit and source file), the reply the vendor gives it, and the canonical values
eventpipe stores for it. Shared by the unit, receiver and integration tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.corpus import API_KEY, PARTNER_ID, placeholders

SDK_BODIES = Path(__file__).resolve().parent / "data" / "sdk_bodies"
# The vendors' paths by route: Retail Rocket's is its method.
_PATHS = {"topsort": "/v2/events", "dfinery": "/api/v1/events"}
_TIME_KEYS = ("occurredAt", "timestamp")


@dataclass(frozen=True)
class SdkBody:
    id: str
    vendor: str
    sdk: str
    route: str
    body: bytes
    expect: dict[str, Any]
    canonical: list[dict[str, Any]] = field(default_factory=list)
    query_string: str | None = None

    @property
    def accepted(self) -> bool:
        return int(self.expect["status"]) < 300

    def path(self) -> str:
        return _PATHS.get(self.vendor, f"/1.0/{self.route}")

    def url(self) -> str:
        """The path with the query the SDK sends (Retail Rocket's credentials; its own odd forms kept)."""
        if self.vendor != "retailrocket":
            return self.path()
        query = self.query_string or f"apiKey={API_KEY}&partnerId={PARTNER_ID}"
        for placeholder, value in placeholders().items():
            query = query.replace(placeholder, value)
        return f"{self.path()}?{query}"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.vendor in ("topsort", "dfinery"):
            headers["Authorization"] = f"Bearer {API_KEY}"
        return headers


def load() -> list[SdkBody]:
    bodies = []
    for path in sorted(SDK_BODIES.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for case in doc["bodies"]:
            text = case.get("body_text")
            body = (
                text.encode() if text is not None else json.dumps(case["body"], ensure_ascii=False).encode()
            )
            bodies.append(
                SdkBody(
                    id=case["id"],
                    vendor=doc["vendor"],
                    sdk=case["sdk"],
                    route=case["route"],
                    body=body,
                    expect=case["expect"],
                    canonical=case.get("canonical", []),
                    query_string=case.get("query_string"),
                )
            )
    return bodies


def _times(node: Any, found: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if (key in _TIME_KEYS and isinstance(value, str)) or key == "event_datetime":
                found.append((key, value))
            else:
                _times(value, found)
    elif isinstance(node, list):
        for item in node:
            _times(item, found)
    return found


def restamped(sdk_body: SdkBody, at: datetime) -> bytes:
    """The body as the SDK sent it, its event times moved to `at` (in their own format) so that they lie
    inside the window. The text is edited in place, so escapes and spacing stay the SDK's own."""
    text = sdk_body.body.decode()
    iso = at.isoformat(timespec="milliseconds")
    for key, value in _times(json.loads(text), []):
        new = str(int(at.timestamp() * 1000)) if key == "event_datetime" else iso
        text = text.replace(
            json.dumps(value, ensure_ascii=False), json.dumps(new) if key != "event_datetime" else new
        )
    return text.encode()
