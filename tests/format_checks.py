"""Checks every vendor format's property tests share: whatever the bytes, `validate` accepts (and the
consumer can then split the record into as many events) or refuses with a 4xx in the vendor's JSON
shape — never any other exception."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pipeline.canonical import CanonicalEvent
from pipeline.formats.base import Accepted, Rejection, Reply, VendorFormat
from pipeline.record import RecordMeta
from tests.corpus import subset


def accepted_or_4xx(
    fmt: VendorFormat, body: bytes, route: str, received_at: datetime, meta: RecordMeta, skew: float = 600.0
) -> tuple[Accepted, list[CanonicalEvent]] | None:
    """None when refused; else what was accepted and the events the consumer reads from it."""
    try:
        accepted = fmt.validate(body, route, received_at, skew)
    except Rejection as rejection:
        reply = fmt.error(rejection)
        assert 400 <= reply.status < 500
        json.loads(reply.body)
        return None
    events = fmt.to_canonical(body, meta)
    assert len(events) == accepted.events
    return accepted, events


def encode_json(value: Any, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate in text becomes bytes that are not UTF-8, as a broken client sends.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def assert_reply_matches(reply: Reply, expect: dict[str, Any]) -> None:
    """A corpus case's `expect`: the status, the exact body (null = empty), or a subset of it."""
    assert reply.status == expect["status"]
    if "body" in expect:
        if expect["body"] is None:
            assert reply.body == b""
        else:
            assert json.loads(reply.body) == expect["body"]
    if "body_has" in expect:
        assert subset(expect["body_has"], json.loads(reply.body))


def json_nodes(value: Any) -> list[Any]:
    """Every container and leaf of a decoded JSON value."""
    if isinstance(value, dict):
        return [value, *(x for v in value.values() for x in json_nodes(v))]
    if isinstance(value, list):
        return [value, *(x for v in value for x in json_nodes(v))]
    return [value]
