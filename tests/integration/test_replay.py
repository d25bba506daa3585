"""`eventpipe replay` against the real broker and sinks: replaying what was consumed stores nothing
new (twice, the second time through the command line), replaying after rows were deleted restores
exactly those, and `--from` an offset or a time reads exactly the records after that point."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers import start_position
from consumers.replay import replay
from tests.integration.conftest import Pipeline, query, row_count
from tests.integration.test_status import cli_env
from tests.integration.traffic import post_clicks
from tests.kafka_util import read_all
from tests.unit.test_cli import eventpipe
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka


async def stored_ids(sink: str) -> set[str]:
    return {str(row[0]) for row in await query(sink, "SELECT event_id FROM events")}


def click_id(record: Any) -> str:
    return str(json.loads(record.value)["clicks"][0]["id"])


def summary_figure(text: str, label: str) -> int:
    found = re.search(rf"^\s*{label}\s+(\d+)$", text, re.MULTILINE)
    assert found, text
    return int(found.group(1))


async def test_replay_stores_nothing_twice_and_restores_deleted_rows(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    ids = await post_clicks(pipeline, 12)
    await pipeline.start_consumer()

    async def all_stored() -> bool:
        return await row_count(settings.sink) == 12

    await wait_for(all_stored, what="12 rows from the consumer")
    await pipeline.stop_consumers()

    again = await replay(settings, start_position.Earliest())
    assert again.caught_up
    assert (again.planned_records, again.records_read) == (12, 12)
    assert (again.events.get("stored", 0), again.events.get("duplicate", 0)) == (0, 12)
    assert await row_count(settings.sink) == 12

    # Twice, through the command line and the same replay group: it seeks to `earliest` again
    # instead of resuming from the group's commits.
    out = await asyncio.to_thread(eventpipe, "replay", "--from", "earliest", env=cli_env(settings))
    assert out.returncode == 0, out.stderr
    assert summary_figure(out.stdout, "records read") == 12
    assert summary_figure(out.stdout, "events stored") == 0
    assert summary_figure(out.stdout, "duplicates") == 12
    assert "caught up" in out.stdout
    assert await row_count(settings.sink) == 12

    for event_id in ids[:4]:
        await query(settings.sink, "DELETE FROM events WHERE event_id = $1", event_id)
    assert await row_count(settings.sink) == 8
    restored = await replay(settings, start_position.Earliest())
    assert restored.caught_up
    assert (restored.events.get("stored", 0), restored.events.get("duplicate", 0)) == (4, 8)
    assert await stored_ids(settings.sink) == set(ids)


@pytest.mark.parametrize("sink_url", ["sqlite"], indirect=True)
async def test_replay_from_an_offset_or_a_time_reads_only_what_follows(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    settings = pipeline.settings
    earlier = await post_clicks(pipeline, 6)
    first_six = await read_all(settings.kafka_bootstrap, settings.raw_topic, expected=6)
    assert len(first_six) == 6
    boundary_ms = max(r.timestamp for r in first_six) + 1
    await wait_for(lambda: time.time() * 1000 > boundary_ms, what="the clock to pass the boundary")
    later = await post_clicks(pipeline, 4)
    records = await read_all(settings.kafka_bootstrap, settings.raw_topic, expected=10)
    assert len(records) == 10
    now = datetime.now(UTC)

    # An offset applies to every partition: records at offset 2 or later in each.
    from_offset = {click_id(r) for r in records if r.offset >= 2}
    by_offset = await replay(
        settings, start_position.parse("2", now), group_id=f"{settings.consumer_group}-offset"
    )
    assert by_offset.caught_up
    assert by_offset.records_read == len(from_offset)
    assert by_offset.events.get("stored", 0) == len(from_offset)
    assert await stored_ids(settings.sink) == from_offset

    # A time, as an operator types it, into a second sink: only the later requests.
    boundary = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=boundary_ms)
    spec = start_position.parse(boundary.isoformat().replace("+00:00", "Z"), now)
    other = settings.replace(sink=f"sqlite:///{tmp_path / 'by-time.db'}")
    by_time = await replay(other, spec, group_id=f"{settings.consumer_group}-time")
    assert by_time.caught_up
    assert (by_time.records_read, by_time.events.get("stored", 0)) == (4, 4)
    assert await stored_ids(other.sink) == set(later)
    assert not set(earlier) & await stored_ids(other.sink)
