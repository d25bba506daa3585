"""`eventpipe replay --from`: what is accepted, what is refused with a message saying why, and how
each form becomes a start offset per partition (always within the partition's offsets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition

from consumers.start_position import AtOffset, AtTime, Earliest, StartSpec, parse, resolve

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("earliest", Earliest(), id="earliest"),
        pytest.param(" Earliest ", Earliest(), id="earliest-any-case"),
        pytest.param("0", AtOffset(0), id="offset-zero"),
        pytest.param("1500", AtOffset(1500), id="offset"),
        pytest.param("2h", AtTime(NOW - timedelta(hours=2)), id="hours"),
        pytest.param("30m", AtTime(NOW - timedelta(minutes=30)), id="minutes"),
        pytest.param("1d12h", AtTime(NOW - timedelta(hours=36)), id="days-and-hours"),
        pytest.param("90s", AtTime(NOW - timedelta(seconds=90)), id="seconds"),
        pytest.param("2026-11-23T10:00:00Z", AtTime(datetime(2026, 11, 23, 10, tzinfo=UTC)), id="iso-z"),
        pytest.param(
            "2026-11-23T19:00:00+09:00", AtTime(datetime(2026, 11, 23, 10, tzinfo=UTC)), id="iso-offset"
        ),
        pytest.param(
            "2026-11-23T10:00:00.250Z",
            AtTime(datetime(2026, 11, 23, 10, 0, 0, 250_000, tzinfo=UTC)),
            id="iso-fraction",
        ),
    ],
)
def test_accepted_forms(text: str, expected: StartSpec) -> None:
    assert parse(text, NOW) == expected


def test_times_are_kept_in_utc() -> None:
    spec = parse("2026-11-23T19:00:00+09:00", NOW)
    assert isinstance(spec, AtTime)
    assert spec.at.tzinfo is UTC
    assert str(spec) == "2026-11-23T10:00:00Z"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("2026-11-23T10:00:00", "needs a timezone", id="naive-time"),
        pytest.param("2026-11-23", "needs a timezone", id="date-only"),
        pytest.param("2026-11-23T13:00:00Z", "in the future", id="future"),
        pytest.param("-5", "expected an ISO-8601 time", id="negative-offset"),
        pytest.param("latest", "expected an ISO-8601 time", id="unknown-word"),
        pytest.param("2 hours", "expected an ISO-8601 time", id="spelled-duration"),
        pytest.param("", "expected an ISO-8601 time", id="empty"),
    ],
)
def test_refused_forms_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(text, NOW)


P0, P1, P2 = (TopicPartition("raw", p) for p in range(3))
FIRST = {P0: 0, P1: 10, P2: 5}
NEXT = {P0: 8, P1: 20, P2: 5}


def test_earliest_starts_at_each_log_start() -> None:
    assert resolve(Earliest(), FIRST, NEXT) == FIRST


def test_an_offset_applies_to_every_partition_within_its_range() -> None:
    # P1's records before 10 are gone (retention); P2 is empty.
    assert resolve(AtOffset(6), FIRST, NEXT) == {P0: 6, P1: 10, P2: 5}
    assert resolve(AtOffset(100), FIRST, NEXT) == NEXT


def test_a_time_starts_at_the_first_record_at_or_after_it() -> None:
    found = {P0: 3, P1: None, P2: None}  # no record at or after the time in P1 and P2
    assert resolve(AtTime(NOW), FIRST, NEXT, found) == {P0: 3, P1: 20, P2: 5}
