"""`eventpipe status` against the real broker and sinks: lag grows while no consumer runs and drains to
zero once one starts, with the rows, members and recent dead letters to match; the CLI's JSON says
the same; an unreachable broker makes the command fail while still reporting the sink; and reading
the sink creates nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.migrate import migrate, redact
from consumers.status.collect import collect, sink_rows
from consumers.status.render import to_text
from consumers.status.snapshot import SinkRows, Snapshot
from pipeline.settings import Settings
from tests.integration.conftest import Pipeline, query, row_count
from tests.integration.traffic import post_clicks
from tests.unit.test_cli import eventpipe
from tests.waiting import wait_for


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "EVENTPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EVENTPIPE_RAW_TOPIC": settings.raw_topic,
        "EVENTPIPE_DLQ_TOPIC": settings.dlq_topic,
        "EVENTPIPE_CONSUMER_GROUP": settings.consumer_group,
        "EVENTPIPE_SINK": settings.sink,
    }


def total_lag(snapshot: Snapshot) -> int:
    assert snapshot.group is not None
    assert snapshot.group.error is None, snapshot.group.error
    return snapshot.group.total_lag


@pytest.mark.kafka
@pytest.mark.parametrize("sink_url", ["sqlite"], indirect=True)
async def test_lag_grows_while_consumers_are_stopped_and_drains_when_they_start(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    await post_clicks(pipeline, 5)
    await post_clicks(pipeline, 1, at=datetime.now(UTC) - timedelta(hours=49))  # dead-lettered as late

    before = await collect(settings)
    assert before.broker.reachable
    assert before.group is not None and before.group.description is not None
    assert before.group.description.state == "Dead"  # no consumer ever joined
    assert total_lag(before) == 6  # nothing committed: every record held is pending
    raw = before.topics[0]
    assert (raw.name, raw.exists, raw.records, len(raw.partitions)) == (settings.raw_topic, True, 6, 3)
    assert not before.sink.reachable  # no consumer has created the database yet
    assert before.sink.error is not None and "no such database file" in before.sink.error
    assert not before.healthy

    await post_clicks(pipeline, 4)
    assert total_lag(await collect(settings)) == 10

    await pipeline.start_consumer()
    latest: list[Snapshot] = [before]

    async def drained() -> bool:
        latest.append(await collect(settings))
        s = latest[-1]
        return (
            total_lag(s) == 0
            and s.sink.rows == 9
            and s.dead_letters is not None
            and s.dead_letters.count == 1
        )

    await wait_for(drained, what=lambda: to_text(latest[-1]))
    after = latest[-1]
    assert after.healthy
    assert await row_count(settings.sink) == 9
    assert after.dead_letters is not None
    assert after.dead_letters.by_reason == {"late": 1}
    assert after.group is not None and after.group.description is not None
    # Records carry no key, so a partition may get none of the ten (about one run in twenty): it has
    # nothing to commit, and its committed offset stays None rather than 0.
    committed = [p.committed if p.high_watermark else (p.committed or 0) for p in after.group.lag]
    assert committed == [p.high_watermark for p in after.group.lag]
    (member,) = after.group.description.members
    assert member.client_id == "eventpipe-consumer"
    assert member.assigned == {settings.raw_topic: [0, 1, 2]}
    text = to_text(after)
    assert f"lag on {settings.raw_topic}: 0 records" in text
    assert "dead letters in the last hour: 1 (late 1)" in text

    # The same state through the real command line, as JSON.
    out = await asyncio.to_thread(eventpipe, "status", "--json", env=cli_env(settings))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["healthy"] is True
    assert doc["group"]["total_lag"] == 0
    assert doc["sink"]["rows"] == 9
    assert doc["dead_letters"]["count"] == 1
    assert [t["high_watermark"] for t in doc["topics"]] == [10, 1]


@pytest.mark.network
async def test_unreachable_broker_fails_the_command_but_reports_the_sink(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{closed_port}", sink=f"sqlite:///{tmp_path}/absent.db")
    out = await asyncio.to_thread(eventpipe, "status", "--json", env=cli_env(settings))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["broker"]["reachable"] is False
    # The cause, for the broker it tried (not aiokafka's bare "Unable to bootstrap"): pipeline/kafka_diagnose.py
    assert doc["broker"]["error"] == f"127.0.0.1:{closed_port}: connection refused: no broker listens there"
    assert doc["sink"] == {
        "url": settings.sink,
        "reachable": False,
        "rows": None,
        "error": f"sqlite {tmp_path}/absent.db: no such database file",
    }
    text = await asyncio.to_thread(eventpipe, "status", env=cli_env(settings))
    assert text.returncode == 1
    assert "UNREACHABLE" in text.stdout


async def test_sink_rows_are_read_without_creating_anything(sink_url: str) -> None:
    missing = await sink_rows(sink_url, timeout_seconds=10)
    assert not missing.reachable
    assert missing.error is not None
    if sink_url.startswith("sqlite:///"):
        assert "no such database file" in missing.error
        assert not await asyncio.to_thread(Path(sink_url.removeprefix("sqlite:///")).exists)
    else:
        assert 'relation "events" does not exist' in missing.error
        assert await query(sink_url, "SELECT to_regclass('events')") == [(None,)]

    await migrate(sink_url)
    assert await sink_rows(sink_url, timeout_seconds=10) == SinkRows(redact(sink_url), True, rows=0)
