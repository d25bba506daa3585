"""The vendor contract cases of tests/data/vendor_cases (the project's own test data, each case with its
origin): cases with their placeholders filled in, and the re-stamping of event times that end-to-end
tests need (the documents' own times are years old)."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.tenants import mint_jwt

CORPUS = Path(__file__).resolve().parent / "data" / "vendor_cases"
API_KEY = "ep_test_key_1"
BAD_KEY = "ep_wrong_key"
PARTNER_ID = "608423a9b126ac6ab3f8f0a5"
OTHER_PARTNER_ID = "5e3b1c2d4f6a7b8c9d0e1f2a"
JWT_SECRET_ENV = "EVENTPIPE_TEST_JWT_SECRET"
DEFAULT_JWT_SECRET = "test-secret-for-shop-a-0123456789abcdef"


def jwt_secret() -> str:
    return os.environ.get(JWT_SECRET_ENV) or DEFAULT_JWT_SECRET


def vendor_cases(vendor: str) -> list[dict[str, Any]]:
    """One vendor's cases as written, placeholders and all (format tests read the headers' raw
    placeholders to tell auth cases from body cases)."""
    cases = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(CORPUS.glob("*.json"))]
    return [case for case in cases if case.get("vendor") == vendor]


def request_body(request: dict[str, Any]) -> bytes:
    """A case's body as a client sends it: the raw text when the case has one, else UTF-8 JSON."""
    if "body_text" in request:
        return str(request["body_text"]).encode()
    return json.dumps(request["body"], ensure_ascii=False).encode()


def placeholders() -> dict[str, str]:
    return {
        "${API_KEY}": API_KEY,
        "${BAD_KEY}": BAD_KEY,
        "${PARTNER_ID}": PARTNER_ID,
        "${OTHER_PARTNER_ID}": OTHER_PARTNER_ID,
        "${JWT}": mint_jwt("shop-a", jwt_secret()),
        "${BAD_JWT}": mint_jwt("shop-a", "some-other-secret-0123456789abcdef"),
    }


def _fill(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in subs.items():
            value = value.replace(k, v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    return value


@dataclass(frozen=True)
class Case:
    id: str
    vendor: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    body_json: Any
    status: int
    expect_body: Any
    expect_body_has: Any
    has_exact_body: bool
    stored: dict[str, int]


def load_cases() -> list[Case]:
    subs = placeholders()
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        raw = json.loads(path.read_text())
        req = _fill(raw["request"], subs)
        if "body_text" in req:
            body = req["body_text"].encode()
            body_json = None
        else:
            body_json = req["body"]
            body = json.dumps(body_json, ensure_ascii=False).encode()
        expect = raw["expect"]
        cases.append(
            Case(
                id=raw["id"],
                vendor=raw["vendor"],
                method=req["method"],
                path=req["path"],
                query=req.get("query", {}),
                headers=req.get("headers", {}),
                body=body,
                body_json=body_json,
                status=expect["status"],
                expect_body=expect.get("body"),
                expect_body_has=expect.get("body_has"),
                has_exact_body="body" in expect,
                stored=raw.get("stored", {}),
            )
        )
    return cases


def restamp(case: Case, at: datetime) -> Case:
    """The case with every event time moved to `at` (same format), so it lies inside the window."""
    if case.body_json is None:
        return case
    body = copy.deepcopy(case.body_json)
    iso = at.isoformat(timespec="seconds")
    ms = int(at.timestamp() * 1000)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (key == "occurredAt" and isinstance(value, str)) or (
                    key == "timestamp" and isinstance(value, str)
                ):
                    node[key] = iso
                elif key == "event_datetime" and isinstance(value, int):
                    node[key] = ms
                elif key == "server_time" and isinstance(value, int):
                    node[key] = ms // 1000
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(body)
    encoded = json.dumps(body, ensure_ascii=False).encode()
    return Case(**{**case.__dict__, "body": encoded, "body_json": body})


def distinct_instants(now: datetime, count: int, spacing_s: float = 1.0) -> list[datetime]:
    return [now - timedelta(minutes=5) + timedelta(seconds=i * spacing_s) for i in range(count)]


def subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


SAMPLE_IDS = {
    "topsort": "topsort-spec-click",
    "retailrocket": "retailrocket-view",
    "dfinery": "dfinery-seed-purchase",
    "impression": "impression-seed-sample",
}


def sample_per_vendor() -> dict[str, Case]:
    """One accepted request of each vendor, for tests that need one of each rather than the corpus."""
    cases = {c.id: c for c in load_cases()}
    return {vendor: cases[case_id] for vendor, case_id in SAMPLE_IDS.items()}
