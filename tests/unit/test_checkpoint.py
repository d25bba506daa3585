"""A batch's checkpoint over in-memory fakes: the steps in their order (write, dead letters, commit,
keys remembered), the outcome it returns, and what is not done when a step fails."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from consumers.batch import Outcome
from consumers.checkpoint import BatchAbandoned
from tests.unit.consumer_fakes import TOPIC, record, rig

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def never() -> bool:
    return False


async def test_steps_run_in_order_and_the_outcome_counts_every_event() -> None:
    r = rig()
    r.sink.rows.add(("shop", "fake", "click", "old"))  # stored by an earlier run: the sink's key says so
    batch = r.steps.prepare(
        [record(0, 7, "a b a@late"), record(1, 3, "old c@future"), record(0, 8, "a")], frozenset()
    )
    outcome = await r.checkpoint.run(batch, never)
    assert r.journal == ["write a b old", "dead letters late future", "commit"]
    assert r.consumer.commits == [{P0: 9, P1: 4}]
    assert ("shop", "fake", "click", "a") in r.recent
    assert outcome == Outcome(
        records=3,
        events={
            ("fake", "stored"): 2,
            ("fake", "duplicate"): 2,  # "a" again in the batch, "old" already in the sink
            ("fake", "late"): 1,
            ("fake", "future"): 1,
        },
        dead_letters={("fake", "late"): 1, ("fake", "future"): 1},
    )
    assert (
        r.metrics.registry.get_sample_value(
            "eventpipe_consumer_events_total", {"source": "fake", "outcome": "stored"}
        )
        == 2
    )


async def test_an_undecodable_record_and_an_unstorable_event_are_dead_lettered_and_counted_invalid() -> None:
    r = rig()
    r.sink.unstorable = {"bad"}
    batch = r.steps.prepare([record(0, 0, "ok bad"), record(0, 1, "x", source="nobody")], frozenset())
    outcome = await r.checkpoint.run(batch, never)
    # The batch refused whole, then each event alone: the good one stored, the bad one a dead letter.
    assert r.journal == [
        "write ok bad",
        "write ok",
        "write bad",
        "dead letters undecodable unstorable",
        "commit",
    ]
    assert outcome.events == {("fake", "stored"): 1, ("fake", "invalid"): 1, ("nobody", "invalid"): 1}
    assert outcome.dead_letters == {("nobody", "undecodable"): 1, ("fake", "unstorable"): 1}


async def test_refused_dead_letters_abandon_the_batch_before_the_commit() -> None:
    r = rig()
    r.dead_letters.refuse = True
    batch = r.steps.prepare([record(0, 0, "a b@late")], frozenset())
    with pytest.raises(BatchAbandoned):
        await r.checkpoint.run(batch, never)
    assert r.journal == ["write a", "dead letters late"]
    assert r.consumer.commits == []
    # Not remembered: when the batch comes again, "a" is fresh (the sink's key absorbs the row).
    assert ("shop", "fake", "click", "a") not in r.recent


async def test_a_sink_outage_pauses_backs_off_and_resumes_with_the_first_write_that_succeeds() -> None:
    r = rig()
    r.sink.down = 3
    began = r.clock.monotonic()
    batch = r.steps.prepare([record(0, 0, "a")], frozenset())
    outcome = await r.checkpoint.run(batch, never)
    assert r.journal == ["write a", "pause", "write a", "write a", "write a", "resume", "commit"]
    assert r.clock.monotonic() - began == pytest.approx(0.2 + 0.4 + 0.8, abs=0.01)  # the policy's waits
    assert not r.consumer.paused
    assert not r.checkpoint.write_failing
    assert outcome.events == {("fake", "stored"): 1}


async def test_the_sink_still_down_on_a_rebalance_abandons_the_batch_with_partitions_resumed() -> None:
    r = rig()
    r.sink.down = 100

    def rebalancing() -> bool:  # a rebalance begins while the second write fails
        return r.journal.count("write a") >= 2

    batch = r.steps.prepare([record(0, 0, "a")], frozenset())
    with pytest.raises(BatchAbandoned):
        await r.checkpoint.run(batch, rebalancing)
    assert r.journal == ["write a", "pause", "write a", "resume"]
    assert r.consumer.commits == []
    assert not r.consumer.paused
    assert r.checkpoint.write_failing  # until a write succeeds: the consumer reports not-ready
