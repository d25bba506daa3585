"""The fault suite's ledger arithmetic (tests/faults/ledger.py): a mistake here would hide a lost or
duplicated event, so the classification is pinned down on a hand-made ledger."""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger, Outcome, compare
from tests.faults.rig import longest_gap


def _ledger() -> Ledger:
    ledger = Ledger("example")
    for event_id, outcome, status in [
        ("a", Outcome.ACKNOWLEDGED, "204"),
        ("b", Outcome.ACKNOWLEDGED, "200"),
        ("c", Outcome.ACKNOWLEDGED, "204"),
        ("d", Outcome.REFUSED, "503"),
        ("e", Outcome.REFUSED, "503"),
        ("f", Outcome.AMBIGUOUS, "ServerDisconnectedError"),
        ("g", Outcome.UNSENT, "no-connection"),
    ]:
        ledger.record(event_id, outcome, status, ledger.sending(event_id))
    return ledger


def test_lost_duplicated_and_phantom_events_are_told_apart() -> None:
    # a stored once, b twice, c never; d refused yet stored; f ambiguous and stored; x foreign.
    figures = compare(_ledger(), {"a": 1, "b": 2, "d": 1, "f": 1, "x": 1})
    counts = (figures.sent, figures.acknowledged, figures.refused, figures.unsent, figures.ambiguous)
    assert counts == (7, 3, 2, 1, 1)
    assert figures.stored == 6
    assert figures.lost == ["c"]
    assert figures.duplicated == {"b": 2}
    assert figures.phantom == ["d", "f", "x"]
    assert figures.unexplained_phantom == ["d", "x"]
    assert compare(_ledger(), {"a": 1, "b": 1, "c": 1, "d": 1}, excused={"d"}).unexplained_phantom == []


def test_a_window_counts_replies_sent_during_the_fault_apart_from_those_it_caught_in_flight() -> None:
    ledger = Ledger("example")
    in_flight = ledger.sending("before")
    window = ledger.open_window()
    caught_late = ledger.sending("while-injecting")
    window.fault_in_effect()
    during = ledger.sending("during")
    ledger.record("before", Outcome.REFUSED, "503", in_flight)
    ledger.record("while-injecting", Outcome.ACKNOWLEDGED, "204", caught_late)
    ledger.record("during", Outcome.REFUSED, "503", during)
    ledger.close_window()
    ledger.record("after", Outcome.ACKNOWLEDGED, "204", ledger.sending("after"))
    assert window.caught == {"before", "while-injecting"}
    assert window.caught_replies == {"503": 1, "204": 1}
    assert window.replies == {"503": 1}
    assert compare(ledger, {"before": 1}, window).outage == {"503": 1}
    assert ledger.in_flight == set()


def test_longest_gap_counts_from_the_bounds_and_ignores_rows_outside_them() -> None:
    stamps = [5.0, 1.0, 2.5, 3.0, 99.0]  # unsorted; 5.0 and 99.0 lie outside [0.5, 4.0]
    assert longest_gap(stamps, 0.5, 4.0) == 1.5  # 1.0 -> 2.5
    assert longest_gap([], 0.5, 4.0) == 3.5  # nothing stored: the whole stretch
    assert longest_gap([3.9], 0.5, 4.0) == pytest.approx(3.4)  # from the start to the first row
