"""Refused requests against a real receiver process: whatever credentials or bodies a client sends, no
reply (status line, headers or body) and no log line echoes a key, a token or a secret, and no reply
carries a stack trace or a path of the code."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from pipeline.tenants import mint_jwt
from tests.conftest import ROOT
from tests.corpus import API_KEY, PARTNER_ID, Case, jwt_secret, load_cases
from tests.kafka_util import unique_settings
from tests.processes import EventpipeProcess, Reply, post_case, running_receiver
from tests.vendor_replies import assert_vendor_reply

pytestmark = pytest.mark.kafka

CASES = {c.id: c for c in load_cases()}
TOPSORT = CASES["topsort-spec-click"]
RETAILROCKET = CASES["retailrocket-view"]
DFINERY = CASES["dfinery-seed-purchase"]
IMPRESSION = CASES["impression-seed-sample"]
# What a reply must never show: the code's insides.
INTERNALS = (
    "Traceback",
    'File "',
    ".py",
    "site-packages",
    str(ROOT),
    "aiohttp.",
    "msgspec.",
    "jwt.",
    "Errno",
)


def _secret(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"  # unique, so a match can only be an echo


@pytest.fixture(scope="module")
def receiver(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventpipeProcess]:
    settings = unique_settings(kafka_bootstrap, request_read_timeout_seconds=1.0, max_body_bytes=64 * 1024)
    with running_receiver(settings.replace(log_level="debug"), tmp_path_factory.mktemp("errors")) as proc:
        yield proc


async def _send(receiver: EventpipeProcess, case: Case, **changes: Any) -> Reply:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False
    ) as session:
        return await post_case(session, receiver.url, case, **changes)


def _assert_clean(resp: Reply, secrets: tuple[str, ...]) -> None:
    assert 400 <= resp.status < 500, resp.body
    assert_vendor_reply(resp.vendor, resp.status, resp.headers, resp.body)
    text = resp.body.decode(errors="replace")
    shown = "\n".join([resp.reason, *(f"{k}: {v}" for k, v in resp.headers.items()), text])
    for secret in secrets:
        assert secret not in shown
        for part in secret.split("."):  # a JWT's header, claims and signature each
            assert len(part) < 16 or part not in shown
    for marker in INTERNALS:
        assert marker not in shown, (marker, shown)


def _token_with(secret: str, **claims: Any) -> str:
    return mint_jwt(claims.pop("sub", "shop-a"), secret, now=claims.pop("now", None))


async def test_wrong_credentials_are_never_echoed(receiver: EventpipeProcess) -> None:
    sent: list[str] = []

    def wrong(kind: str) -> str:
        sent.append(_secret(kind))
        return sent[-1]

    auth = {"Content-Type": "application/json"}
    refused = [
        await _send(receiver, TOPSORT, headers={**auth, "Authorization": f"Bearer {wrong('sk_live')}"}),
        await _send(receiver, TOPSORT, headers={**auth, "Authorization": f"Basic {wrong('basic')}"}),
        await _send(receiver, DFINERY, headers={**auth, "Authorization": f"Bearer {wrong('dfn')}"}),
        await _send(receiver, DFINERY, headers={**auth, "Authorization": wrong("no_scheme")}),
        await _send(receiver, RETAILROCKET, params={"apiKey": wrong("rr"), "partnerId": PARTNER_ID}),
        await _send(receiver, RETAILROCKET, params={"apiKey": API_KEY, "partnerId": wrong("partner")}),
    ]
    bad_tokens = [
        _token_with(wrong("jwt_secret")),  # signed with another secret
        _token_with(jwt_secret(), now=1_000_000_000),  # expired in 2001, signed with the real secret
        _token_with(wrong("unknown_tenant_secret"), sub=wrong("tenant")),
        wrong("not.a.jwt"),
    ]
    sent.extend(bad_tokens)
    for token in bad_tokens:
        refused.append(
            await _send(receiver, IMPRESSION, headers={**auth, "Authorization": f"Bearer {token}"})
        )
        refused.append(await _send(receiver, IMPRESSION, headers=auth, params={"token": token}))
    for resp in refused:
        _assert_clean(resp, (*sent, jwt_secret()))
    log = receiver.log_text()
    for secret in (*sent, jwt_secret()):
        assert secret not in log


@pytest.mark.parametrize("case", [TOPSORT, RETAILROCKET, DFINERY, IMPRESSION], ids=lambda c: c.vendor)
async def test_malformed_requests_get_no_internals_back(receiver: EventpipeProcess, case: Case) -> None:
    """With valid credentials: they are not echoed either, nor is anything of the code."""
    token = case.headers.get("Authorization", "").removeprefix("Bearer ")
    secrets = tuple(s for s in (token, case.query.get("apiKey"), jwt_secret()) if s)
    json_headers = {**case.headers, "Content-Type": "application/json"}
    gzip_headers = {**json_headers, "Content-Encoding": "gzip"}
    bodies: list[dict[str, Any]] = [
        {"data": b"{not json"},
        {"data": b'{"a": "\xff"}'},
        {"data": b"[" * 50_000 + b"]" * 50_000},
        {"data": case.body.replace(b"{", b'{"a": NaN, ', 1)},
        {"data": case.body.replace(b"{", b'{"a": 1, "a": 2, ', 1)},
        {"data": b" " * (128 * 1024)},  # above this receiver's 64 KiB limit
        {"data": gzip.compress(b" " * (8 * 1024 * 1024)), "headers": gzip_headers},
        {"data": b"\x1f\x8b\x08\x00broken", "headers": gzip_headers},
        {"data": b"", "headers": gzip_headers},  # found by the fuzzer: a 500 once
        {"data": case.body, "headers": {**json_headers, "Content-Encoding": "br"}},
    ]
    if case.vendor != "retailrocket":  # the one vendor that takes any content type
        # (text/plain is taken as JSON on the browser-facing routes: a form is refused by all but Retail Rocket)
        form = {**case.headers, "Content-Type": "application/x-www-form-urlencoded"}
        bodies.append({"data": case.body, "headers": form})
    for changes in bodies:
        _assert_clean(await _send(receiver, case, **changes), secrets)
    assert receiver.alive()
