"""The official @topsort/sdk from Node, as a shop's server would run it: a real client that nobody here
wrote. reportEvent with the SDK README's own example answers {ok: true} and its four events land in the
sink through the whole pipeline; a wrong key gets Topsort's 401, which the SDK reads and does not retry."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser import tracking
from tests.corpus import API_KEY, BAD_KEY
from tests.integration.conftest import Pipeline, query
from tests.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

SCRIPT = Path(__file__).resolve().parent / "node" / "report_event.mjs"
NODE_SECONDS = 60.0


async def report(node: str, host: str, api_key: str, event: dict[str, Any]) -> Any:
    """The script's output. Run without blocking: the receiver answering it lives in this event loop."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=SCRIPT.parent,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    payload = json.dumps({"host": host, "apiKey": api_key, "event": event}).encode()
    out, err = await asyncio.wait_for(proc.communicate(payload), NODE_SECONDS)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_the_topsort_sdk_from_node_reports_the_readme_example(
    pipeline: Pipeline, node: str, topsort_sdk_version: str, figures: list[str]
) -> None:
    await pipeline.start_consumer()
    host = str(pipeline.client.make_url("")).rstrip("/")
    tag = uuid.uuid4().hex[:12]
    event = tracking.readme_event(tag, datetime.now(UTC))

    assert await report(node, host, API_KEY, event) == {"result": {"ok": True, "retry": False}}
    wrong = await report(node, host, BAD_KEY, tracking.readme_event(tag + "x", datetime.now(UTC)))
    assert wrong["error"]["status"] == 401
    assert wrong["error"]["body"]["errCode"] == "unauthorized"
    assert wrong["error"]["retry"] is False

    sql = "SELECT event_type, event_id FROM events WHERE anonymous_id LIKE $1 ORDER BY event_type"

    async def stored() -> bool:
        return len(await query(pipeline.settings.sink, sql, f"%-{tag}")) == 4

    await wait_for(stored, NODE_SECONDS, "the SDK's four events in the sink")
    rows = await query(pipeline.settings.sink, sql, f"%-{tag}")
    assert [t for t, _ in rows] == ["click", "impression", "page_view", "purchase"]
    assert {i for _, i in rows} == {item["id"] for name in tracking.TOPSORT_ARRAYS for item in event[name]}
    assert await query(pipeline.settings.sink, sql, f"%-{tag}x") == []

    version = await asyncio.create_subprocess_exec(node, "--version", stdout=asyncio.subprocess.PIPE)
    node_version = (await version.communicate())[0].decode().strip()
    sink = pipeline.settings.sink.split(":", 1)[0]
    figures.append(
        f"node {node_version} [{sink}]: @topsort/sdk {topsort_sdk_version} reportEvent -> {{'ok': True}}, "
        f"rows {[t for t, _ in rows]}; a wrong key -> 401 unauthorized, retry false, nothing stored"
    )
