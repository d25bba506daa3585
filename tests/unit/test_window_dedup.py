"""The window and the in-memory dedup: pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumers.dedup import RecentKeys
from consumers.window import WindowPolicy, split, verdict
from pipeline.canonical import CanonicalEvent

RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def event(
    age: timedelta, source: str = "topsort", event_id: str = "e1", event_type: str = "click"
) -> CanonicalEvent:
    return CanonicalEvent(
        tenant="t",
        source=source,
        event_type=event_type,
        event_id=event_id,
        occurred_at=RECEIVED - age,
        received_at=RECEIVED,
        raw=b"{}",
    )


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(timedelta(0), None, id="now"),
        pytest.param(timedelta(hours=47, minutes=59, seconds=59), None, id="just-inside-48h"),
        pytest.param(timedelta(hours=48), None, id="exactly-48h"),
        pytest.param(timedelta(hours=48, seconds=1), "late", id="just-late"),
        pytest.param(timedelta(days=400), "late", id="years-old"),
        pytest.param(-timedelta(seconds=600), None, id="future-at-skew"),
        pytest.param(-timedelta(seconds=601), "future", id="future-beyond-skew"),
    ],
)
def test_verdict(age: timedelta, expected: str | None) -> None:
    assert verdict(event(age), WindowPolicy()) == expected


def test_window_is_measured_against_received_at_not_now() -> None:
    # received 47h59m50s after it occurred, processed days later: still inside
    old = CanonicalEvent(
        tenant="t",
        source="topsort",
        event_type="click",
        event_id="x",
        occurred_at=RECEIVED - timedelta(hours=47, minutes=59, seconds=50),
        received_at=RECEIVED,
        raw=b"{}",
    )
    assert verdict(old, WindowPolicy()) is None


def test_per_source_override() -> None:
    policy = WindowPolicy(hours=48, hours_by_source={"dfinery": 1})
    assert verdict(event(timedelta(hours=2), source="dfinery"), policy) == "late"
    assert verdict(event(timedelta(hours=2), source="topsort"), policy) is None


def test_split_keeps_order_and_reasons() -> None:
    events = [
        event(timedelta(0), event_id="a"),
        event(timedelta(days=3), event_id="b"),
        event(-timedelta(hours=1), event_id="c"),
    ]
    inside, outside = split(events, WindowPolicy())
    assert [e.event_id for e in inside] == ["a"]
    assert [(e.event_id, r) for e, r in outside] == [("b", "late"), ("c", "future")]


def test_dedup_within_batch_and_after_remember() -> None:
    keys = RecentKeys(capacity=10)
    batch = [
        event(timedelta(0), event_id="a"),
        event(timedelta(0), event_id="a"),
        event(timedelta(0), event_id="b"),
    ]
    fresh, dups, fresh_keys = keys.split(batch)
    assert [e.event_id for e in fresh] == ["a", "b"]
    assert [e.event_id for e in dups] == ["a"]
    assert fresh_keys == {e.dedup_key() for e in fresh}
    # not remembered until the batch is committed: a retry after a failed write is not a duplicate
    assert keys.split(fresh)[1] == []
    keys.remember(fresh_keys)
    fresh2, dups2, _ = keys.split([event(timedelta(0), event_id="a"), event(timedelta(0), event_id="c")])
    assert [e.event_id for e in fresh2] == ["c"]
    assert [e.event_id for e in dups2] == ["a"]


def test_dedup_counts_the_batch_being_written() -> None:
    keys = RecentKeys(capacity=10)
    writing = [event(timedelta(0), event_id="a")]
    in_flight = frozenset(e.dedup_key() for e in writing)
    fresh, dups, _ = keys.split(
        [event(timedelta(0), event_id="a"), event(timedelta(0), event_id="b")], in_flight
    )
    assert ([e.event_id for e in fresh], [e.event_id for e in dups]) == (["b"], ["a"])
    assert len(keys) == 0  # nothing remembered: the batch being written may still fail


def test_dedup_key_includes_type_and_source() -> None:
    keys = RecentKeys(capacity=10)
    keys.remember([event(timedelta(0), event_id="a").dedup_key()])
    fresh, _, _ = keys.split(
        [
            event(timedelta(0), event_id="a", event_type="impression"),
            event(timedelta(0), source="dfinery", event_id="a"),
        ]
    )
    assert len(fresh) == 2


def test_dedup_memory_is_bounded() -> None:
    keys = RecentKeys(capacity=100)
    for i in range(10):
        keys.remember([event(timedelta(0), event_id=f"{i}-{j}").dedup_key() for j in range(50)])
    assert len(keys) == 100
    # the oldest were evicted, the newest kept
    assert ("t", "topsort", "click", "0-0") not in keys
    assert ("t", "topsort", "click", "9-49") in keys
