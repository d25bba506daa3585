"""Admission's arithmetic: what a request reserves from its headers, when it is refused, and that every
release gives back exactly what was reserved."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load
from producers.receiver.admission import Admission, Bounds

LIMIT = 1_048_576
BOUNDS = Bounds(max_bytes=4 * LIMIT, max_body_bytes=LIMIT)


@pytest.mark.parametrize(
    ("content_length", "encoding", "reserved"),
    [
        pytest.param(620_000, "", 620_000, id="content-length"),
        pytest.param(0, "", 0, id="empty-body"),
        pytest.param(5 * LIMIT, "identity", LIMIT, id="above-the-limit-reserves-the-limit"),
        pytest.param(None, "", LIMIT, id="chunked-reserves-the-limit"),
        pytest.param(2_000, "gzip", LIMIT, id="compressed-reserves-the-limit"),
        pytest.param(2_000, " Deflate ", LIMIT, id="compressed-any-case"),
    ],
)
def test_reservation_from_headers(content_length: int | None, encoding: str, reserved: int) -> None:
    assert BOUNDS.reservation(content_length, encoding) == reserved


def test_admits_up_to_the_bound_then_refuses() -> None:
    admission = Admission(BOUNDS)
    assert all(admission.admit(LIMIT) for _ in range(4))
    assert not admission.admit(1)
    assert (admission.bytes, admission.requests) == (4 * LIMIT, 4)
    admission.release(LIMIT)
    assert not admission.admit(LIMIT + 1)
    assert admission.admit(LIMIT)
    assert admission.admit(0)  # at the bound: a request with no body holds nothing


def test_a_refusal_reserves_nothing() -> None:
    admission = Admission(BOUNDS)
    assert admission.admit(3 * LIMIT)
    assert not admission.admit(2 * LIMIT)
    assert (admission.bytes, admission.requests) == (3 * LIMIT, 1)


def test_zero_is_unlimited() -> None:
    admission = Admission(Bounds(max_bytes=0, max_body_bytes=LIMIT))
    assert all(admission.admit(LIMIT) for _ in range(1000))
    assert admission.bytes == 1000 * LIMIT


def test_an_idle_worker_admits_a_body_above_the_bound() -> None:
    """Never refused forever: a request larger than the bound enters a worker with nothing in flight."""
    admission = Admission(Bounds(max_bytes=10, max_body_bytes=LIMIT))
    assert admission.admit(LIMIT)
    assert not admission.admit(1)
    admission.release(LIMIT)
    assert (admission.bytes, admission.requests) == (0, 0)


def test_releasing_what_was_not_reserved_is_a_bug() -> None:
    admission = Admission(BOUNDS)
    with pytest.raises(RuntimeError):
        admission.release(0)
    assert admission.admit(10)
    with pytest.raises(RuntimeError):
        admission.release(11)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("0", True, id="unlimited"),
        pytest.param(str(LIMIT), True, id="one-body"),
        pytest.param(str(LIMIT - 1), False, id="below-one-body"),
        pytest.param("-1", False, id="negative"),
    ],
)
def test_setting_holds_at_least_one_body(value: str, ok: bool) -> None:
    environ = {"EVENTPIPE_MAX_IN_FLIGHT_BYTES": value, "EVENTPIPE_MAX_BODY_BYTES": str(LIMIT)}
    if ok:
        assert load(environ).max_in_flight_bytes == int(value)
    else:
        with pytest.raises(ConfigError, match="max_in_flight_bytes"):
            load(environ)
