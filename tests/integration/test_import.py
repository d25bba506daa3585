"""`eventpipe import` as an operator runs it: a file of Topsort bodies with good, repeated, late,
blank, broken and over-long lines goes through the vendor's validation onto the real broker; a real
consumer stores the good events once each; the reject file names each refused line with the reply
the receiver would have given; the exit status says lines were refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli_process import eventpipe
from tests.corpus import CORPUS
from tests.integration.conftest import Pipeline, query
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka

MAX_BODY = 2048


def click(event_id: str, at: datetime) -> str:
    event = {"id": event_id, "occurredAt": at.isoformat(), "opaqueUserId": "u-import"}
    return json.dumps({"clicks": [event]})


@pytest.mark.parametrize("sink_url", ["sqlite"], indirect=True)
async def test_import_sends_good_lines_once_and_rejects_bad_ones(pipeline: Pipeline, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    two = json.dumps(
        {
            "impressions": [{"id": "i-2", "occurredAt": now.isoformat(), "opaqueUserId": "u-import"}],
            "purchases": [
                {
                    "id": "o-3",
                    "occurredAt": now.isoformat(),
                    "opaqueUserId": "u-import",
                    "items": [{"productId": "p-1", "unitPrice": "23.90"}],
                }
            ],
        }
    )
    lines = [
        click("c-1", now),  # 1
        "",  # 2 blank
        two,  # 3: two events
        click("c-1", now),  # 4: line 1 again
        '{"clicks": [{"id": "c-9", "occurredAt": "2026-01-01T00:00:00Z"}]}',  # 5: no opaqueUserId
        "{not json",  # 6
        click("c-late", now - timedelta(days=3)),  # 7: accepted, then late in the consumer
        "   ",  # 8 blank
        json.dumps(
            {"clicks": [{"id": "c-big", "occurredAt": now.isoformat(), "opaqueUserId": "x" * MAX_BODY}]}
        ),  # 9
        click("c-4", now),  # 10, CRLF-terminated
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(("\n".join(lines[:-1]) + "\n" + lines[-1] + "\r\n").encode())
    rejects = tmp_path / "rejects.jsonl"
    s = pipeline.settings
    env = {
        "EVENTPIPE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "EVENTPIPE_RAW_TOPIC": s.raw_topic,
        "EVENTPIPE_TENANTS": str(CORPUS / "tenants.toml"),
        "EVENTPIPE_MAX_BODY_BYTES": str(MAX_BODY),
    }
    await pipeline.start_consumer()

    argv = ["import", str(source), "--source", "topsort", "--tenant", "shop-a", "--rejects", str(rejects)]
    result = await eventpipe(*argv, env=env)
    assert result.returncode == 1, result.stdout + result.stderr  # some lines refused, all others sent
    assert "sent:    5 lines, 6 events" in result.stdout
    assert "refused: 3 lines (2 × 400, 1 × 413)" in result.stdout

    refused = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["status"], r["reply"]["errCode"]) for r in refused] == [
        (5, 400, "bad_request"),
        (6, 400, "bad_request"),
        (9, 413, "payload_too_large"),
    ]
    assert "$.clicks[0].opaqueUserId" in refused[0]["reply"]["message"]

    metrics = pipeline.metrics[0].registry

    def outcomes() -> dict[str, int]:
        return {
            o: int(
                metrics.get_sample_value(
                    "eventpipe_consumer_events_total", {"source": "topsort", "outcome": o}
                )
                or 0
            )
            for o in ("stored", "duplicate", "late")
        }

    # lines 1, 3 (two events), 4, 7 and 10 were sent: six events
    await wait_for(
        lambda: sum(outcomes().values()) >= 6, 60, lambda: f"six events counted, have {outcomes()}"
    )
    assert outcomes() == {"stored": 4, "duplicate": 1, "late": 1}
    rows = await query(s.sink, "SELECT event_id, event_type, tenant, source FROM events ORDER BY event_id")
    assert rows == [
        ("c-1", "click", "shop-a", "topsort"),
        ("c-4", "click", "shop-a", "topsort"),
        ("i-2", "impression", "shop-a", "topsort"),
        ("o-3", "purchase", "shop-a", "topsort"),
    ]
