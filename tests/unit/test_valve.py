"""The valve's bookkeeping: held connections come out oldest first, those held past the wait all at
once, and how many are let through for the room a worker has."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load
from producers.receiver.admission import Admission, Bounds
from producers.receiver.valve import Held, room_for

MIB = 1 << 20


def test_held_come_out_oldest_first_and_each_once() -> None:
    held: Held[str] = Held()
    held.hold("a", 1.0)
    held.hold("b", 2.0)
    held.hold("a", 3.0)  # held again before it was let through: it keeps its place
    held.hold("c", 4.0)
    assert len(held) == 3
    assert [held.oldest(), held.oldest(), held.oldest(), held.oldest()] == ["a", "b", "c", None]


def test_expired_are_those_held_at_or_before_the_cutoff() -> None:
    held: Held[str] = Held()
    for key, since in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        held.hold(key, since)
    assert held.expired(0.5) == []
    assert held.expired(2.0) == ["a", "b"]
    assert "c" in held and len(held) == 1


def test_a_dropped_connection_is_not_let_through() -> None:
    held: Held[str] = Held()
    held.hold("a", 1.0)
    held.hold("b", 2.0)
    held.drop("a")
    held.drop("gone")  # closed while not held: nothing to do
    assert held.oldest() == "b"
    assert held.oldest() is None


def _admission(max_bytes: int, reserved: list[int]) -> Admission:
    admission = Admission(Bounds(max_bytes=max_bytes, max_body_bytes=MIB))
    for size in reserved:
        assert admission.admit(size)
    return admission


@pytest.mark.parametrize(
    ("reserved", "arriving", "estimate", "room"),
    [
        pytest.param([MIB], 0, 620_000, 1, id="one-more-body"),
        pytest.param([MIB, 620_000], 0, 620_000, 0, id="full"),
        pytest.param([MIB], 1, 620_000, 0, id="room-taken-by-one-arriving"),
        pytest.param([], 0, 620_000, 3, id="empty-worker"),
        pytest.param([], 0, 0, 1, id="nothing-known-yet"),
        pytest.param([], 1, 3 * MIB, 0, id="one-arriving-larger-than-the-bound"),
        pytest.param([], 0, 3 * MIB, 1, id="empty-worker-takes-any-size"),
    ],
)
def test_room_for(reserved: list[int], arriving: int, estimate: int, room: int) -> None:
    assert room_for(_admission(2 * MIB, reserved), arriving, estimate) == room


def test_no_bound_no_holding() -> None:
    assert room_for(_admission(0, [MIB] * 10), 5, MIB) > 1000


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("0.5", True, id="default"),
        pytest.param("0", True, id="off"),
        pytest.param("-0.1", False, id="negative"),
    ],
)
def test_wait_setting(value: str, ok: bool) -> None:
    environ = {"EVENTPIPE_OVERLOAD_WAIT_SECONDS": value}
    if ok:
        assert load(environ).overload_wait_seconds == float(value)
    else:
        with pytest.raises(ConfigError, match="overload_wait_seconds"):
            load(environ)
