"""Personal data never reaches the logs: every corpus case, and variants that fill every personal field
the vendors define (emails, phones, names, free-text customData), through a real receiver and a real
consumer, both at debug level; no personal value from the payloads appears in anything either wrote.
Nor does a key, a token or a JWT secret."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.tenants import mint_jwt
from tests.corpus import API_KEY, Case, distinct_instants, jwt_secret, load_cases, restamp
from tests.kafka_util import committed_total, unique_settings
from tests.processes import EventpipeProcess, post_case, running_consumer, running_receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka

# Fields that hold a person's data in the four vendor APIs; everything beneath customData is free text.
PERSONAL_FIELDS = frozenset({"email", "phone", "user_name", "name", "first_name", "last_name", "customData"})


def personal_values(node: Any, personal: bool = False) -> set[str]:
    """Every string (and number) held by a personal field, at any depth."""
    if isinstance(node, dict):
        return {
            v
            for key, value in node.items()
            for v in personal_values(value, personal or key in PERSONAL_FIELDS)
        }
    if isinstance(node, list):
        return {v for value in node for v in personal_values(value, personal)}
    if (
        personal
        and isinstance(node, str | int | float)
        and not isinstance(node, bool)
        and len(str(node)) >= 4
    ):
        return {str(node)}
    return set()


def _with(case: Case, change: Any) -> Case:
    body = copy.deepcopy(case.body_json)
    change(body)
    return Case(**{**case.__dict__, "body_json": body, "body": json.dumps(body, ensure_ascii=False).encode()})


def personal_variants(cases: dict[str, Case]) -> list[Case]:
    """Cases filling the personal fields the corpus leaves out, with values unique to this run."""
    tag = uuid.uuid4().hex[:8]

    def contact(body: dict[str, Any]) -> None:
        body.update(
            email=f"jane.roe.{tag}@example.org",
            phone=f"+44 20 7946 {tag[:4]}",
            customData={"note": f"call after six, ask for Jane Roe {tag}", "address": f"{tag} Baker Street"},
        )

    def dfinery_user(body: dict[str, Any]) -> None:
        body["event_attributes"]["event_id"] = str(uuid.uuid4())
        body["user_attributes"].update(user_name=f"Kim Minji {tag}", email=f"minji.{tag}@example.kr")

    return [
        _with(cases["retailrocket-setContact"], contact),
        _with(cases["dfinery-seed-purchase"], dfinery_user),
    ]


def test_no_personal_value_is_ever_logged(kafka_bootstrap: str, tmp_path: Path) -> None:
    corpus = load_cases()
    by_id = {c.id: c for c in corpus}
    cases = corpus + personal_variants(by_id)
    instants = distinct_instants(datetime.now(UTC), len(cases))
    # accepted ones moved into the window, so they are stored (not dead-lettered as late)
    cases = [restamp(c, at) if c.status < 300 else c for c, at in zip(cases, instants, strict=True)]
    personal = set().union(*(personal_values(c.body_json) for c in cases))
    assert any("@" in v for v in personal) and any(v.startswith("+44") for v in personal)
    assert any("Jane Roe" in v for v in personal) and any("Hong Gildong" in v for v in personal)
    secrets = {API_KEY, jwt_secret(), mint_jwt("shop-a", jwt_secret())}

    settings = unique_settings(
        kafka_bootstrap, sink=f"sqlite:///{tmp_path / 'events.db'}", log_level="debug", batch_max_wait_ms=100
    )
    with running_receiver(settings, tmp_path) as receiver, running_consumer(settings, tmp_path) as consumer:
        accepted = asyncio.run(_post_all(receiver, cases))
        wait_until(
            lambda: asyncio.run(committed_total(settings)) >= accepted,
            60,
            f"the consumer to commit {accepted} records",
        )
        logs = receiver.log_text() + consumer.log_text()

    assert '"event": "rejected"' in logs and '"event": "partitions_assigned"' in logs  # the logs were read
    leaked = sorted(v for v in personal if v in logs)
    assert not leaked, f"personal data in the logs: {leaked}"
    assert not [s for s in secrets if s in logs], "a key, token or secret in the logs"


async def _post_all(receiver: EventpipeProcess, cases: list[Case]) -> int:
    """Each case's reply as the corpus expects it; how many were accepted."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        replies = [await post_case(session, receiver.url, case) for case in cases]
    assert [r.status for r in replies] == [c.status for c in cases]
    return sum(r.status < 300 for r in replies)
