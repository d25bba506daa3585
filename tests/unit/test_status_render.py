"""`eventpipe status` rendering and lag arithmetic, from hand-built snapshots: the table an operator
reads, the JSON a machine reads, and what each says when the broker or the sink is down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from consumers.lookup import Cluster, GroupDescription, Member
from consumers.replay import Summary
from consumers.status import snapshot as snap
from consumers.status.render import table, to_json, to_text

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RAW = "eventpipe.raw"
P0, P1, P2 = (TopicPartition(RAW, p) for p in range(3))


def test_lag_counts_from_the_commit_or_from_the_log_start() -> None:
    first = {P0: 0, P1: 40, P2: 0}
    next_ = {P0: 100, P1: 50, P2: 7}
    committed = {P0: 90, P1: 10}  # P1's commit predates the log start; P2 was never committed
    assert snap.lag(first, next_, committed) == [
        snap.PartitionLag(0, 100, 90, 10),
        snap.PartitionLag(1, 50, 10, 10),
        snap.PartitionLag(2, 7, None, 7),
    ]


def test_topic_totals() -> None:
    topic = snap.topic(RAW, "raw", {P0: 5, P1: 0}, {P0: 15, P1: 3}, 7 * 86_400_000)
    assert (topic.records, topic.high_watermark) == (13, 18)
    assert [(p.partition, p.first, p.next) for p in topic.partitions] == [(0, 5, 15), (1, 0, 3)]


def healthy() -> snap.Snapshot:
    first = {P0: 0, P1: 0, P2: 0}
    next_ = {P0: 120, P1: 95, P2: 101}
    lag = snap.lag(first, next_, {P0: 100, P1: 95})
    members = [
        Member("eventpipe-consumer-1", "eventpipe-consumer", "/10.0.0.7", {RAW: [0, 1]}),
        Member("eventpipe-consumer-2", "eventpipe-consumer", "/10.0.0.8", {RAW: [2]}),
    ]
    return snap.Snapshot(
        taken_at=AT,
        broker=snap.Broker("kafka:9092", True, Cluster("abc", 1, [1, 2, 3])),
        sink=snap.SinkRows("postgresql://ep:***@db/ep", True, rows=4321),
        topics=[
            snap.topic(RAW, "raw", first, next_, 168 * 3_600_000),
            snap.topic("eventpipe.dlq", "dlq", {}, {}, 36 * 3_600_000),
        ],
        group=snap.Group(
            "eventpipe-sink",
            RAW,
            GroupDescription("eventpipe-sink", "Stable", members),
            lag,
            sum(r.lag for r in lag),
        ),
        dead_letters=snap.DeadLetters(AT - timedelta(hours=1), 3, {"late": 2, "future": 1}),
    )


def test_table_for_people() -> None:
    text = to_text(healthy())
    assert text.splitlines() == [
        "eventpipe status at 2026-11-23 10:00:00 UTC",
        "",
        "broker  kafka:9092  reachable  cluster abc  brokers 1,2,3  controller 1",
        "",
        "topic          role  partitions  retention  records  high watermark",
        "eventpipe.raw  raw            3  7 d            316             316",
        "eventpipe.dlq  dlq            0  36 h             0               0",
        "",
        "group eventpipe-sink: Stable, 2 members",
        "member                client              host       partitions",
        "eventpipe-consumer-1  eventpipe-consumer  /10.0.0.7  0-1",
        "eventpipe-consumer-2  eventpipe-consumer  /10.0.0.8  2",
        "",
        "lag on eventpipe.raw: 121 records",
        "partition  high watermark  committed  lag",
        "        0             120        100   20",
        "        1              95         95    0",
        "        2             101          -  101",
        "",
        "sink    postgresql://ep:***@db/ep  rows 4321",
        "dead letters in the last hour: 3 (future 1, late 2)",
    ]


def test_json_for_machines() -> None:
    doc = json.loads(to_json(healthy()))
    assert doc["healthy"] is True
    assert doc["taken_at"] == "2026-11-23T10:00:00Z"
    assert doc["group"]["total_lag"] == 121
    assert doc["group"]["lag"][2] == {"partition": 2, "high_watermark": 101, "committed": None, "lag": 101}
    assert doc["group"]["description"]["members"][0]["assigned"] == {RAW: [0, 1]}
    assert doc["sink"] == {"url": "postgresql://ep:***@db/ep", "reachable": True, "rows": 4321, "error": None}
    assert doc["dead_letters"]["by_reason"] == {"late": 2, "future": 1}
    assert [t["records"] for t in doc["topics"]] == [316, 0]


def test_broker_and_sink_down() -> None:
    down = snap.Snapshot(
        taken_at=AT,
        broker=snap.Broker("kafka:9092", False, error="KafkaConnectionError: Unable to bootstrap"),
        sink=snap.SinkRows("sqlite:///x.db", False, error="sqlite x.db: no such database file"),
    )
    assert not down.healthy
    assert to_text(down).splitlines()[2:] == [
        "broker  kafka:9092  UNREACHABLE: KafkaConnectionError: Unable to bootstrap",
        "",
        "sink    sqlite:///x.db  UNREACHABLE: sqlite x.db: no such database file",
    ]
    doc = json.loads(to_json(down))
    assert (doc["healthy"], doc["topics"], doc["group"], doc["dead_letters"]) == (False, [], None, None)


def test_missing_topic_unknown_group_and_partial_reasons() -> None:
    s = snap.Snapshot(
        taken_at=AT,
        broker=snap.Broker("k:9092", True, Cluster("c", 1, [1])),
        sink=snap.SinkRows("sqlite:///x.db", True, rows=0),
        topics=[snap.Topic(RAW, "raw", exists=False)],
        group=snap.Group("g", RAW, GroupDescription("g", "Dead", [])),
        dead_letters=snap.DeadLetters(AT, 20_000, {"late": 10_000}, reasons_complete=False),
    )
    text = to_text(s)
    assert "eventpipe.raw  raw   missing" in text
    assert "group g: no such group yet (nothing ever joined or committed)" in text
    assert "dead letters in the last hour: 20000 (late 10000; reasons of the first records read only)" in text


def test_table_aligns_text_left_and_numbers_right() -> None:
    assert table(["name", "n"], [["a", 1], ["bbb", 100]]) == ["name    n", "a       1", "bbb   100"]


def test_replay_summary() -> None:
    summary = Summary(
        topic=RAW,
        group_id="eventpipe-sink-replay",
        start="earliest",
        sink="sqlite:///e.db",
        partitions=12,
        planned_records=40,
        caught_up=True,
        records_read=40,
        events={"stored": 5, "duplicate": 30, "late": 2},
        dead_letters={"late": 2},
    )
    assert summary.text().splitlines() == [
        "replay of eventpipe.raw from earliest into sqlite:///e.db (group eventpipe-sink-replay)",
        "40 records to read in 12 partitions",
        "  records read   40",
        "  events stored   5",
        "  duplicates     30",
        "  late            2",
        "  future          0",
        "  invalid         0",
        "  dead-lettered   2",
        "dead letters by reason: late 2",
        "caught up to the high watermarks taken at the start",
    ]
