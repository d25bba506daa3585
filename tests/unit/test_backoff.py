"""The backoff helper: waits grow by the factor up to the cap, start over after reset, and stay
within the jitter's share; driven with a recording sleep instead of a clock."""

from __future__ import annotations

import random

import pytest

from pipeline.backoff import Backoff, BackoffPolicy


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


async def waits(backoff: Backoff, n: int) -> None:
    for _ in range(n):
        await backoff.wait()


async def test_waits_double_up_to_the_cap() -> None:
    sleeps = Sleeps()
    backoff = Backoff(BackoffPolicy(initial=0.2, cap=2.0), sleep=sleeps)
    await waits(backoff, 6)
    assert sleeps.slept == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


async def test_next_delay_announces_the_coming_wait_and_reset_starts_over() -> None:
    sleeps = Sleeps()
    backoff = Backoff(BackoffPolicy(initial=1.0, cap=30.0, factor=3.0), sleep=sleeps)
    announced = []
    for _ in range(3):
        announced.append(backoff.next_delay)
        await backoff.wait()
    backoff.reset()
    announced.append(backoff.next_delay)
    await backoff.wait()
    assert announced == sleeps.slept == [1.0, 3.0, 9.0, 1.0]


def test_step_takes_the_delay_without_sleeping() -> None:
    backoff = Backoff(BackoffPolicy(initial=0.5, cap=1.5))
    assert [backoff.step() for _ in range(4)] == [0.5, 1.0, 1.5, 1.5]


async def test_jitter_shortens_each_wait_by_at_most_its_share() -> None:
    sleeps = Sleeps()
    policy = BackoffPolicy(initial=1.0, cap=8.0, jitter=0.5)
    backoff = Backoff(policy, sleep=sleeps, rng=random.Random(7))
    await waits(backoff, 200)
    bases = [min(2.0**i, 8.0) for i in range(200)]
    assert all(base / 2 <= slept <= base for slept, base in zip(sleeps.slept, bases, strict=True))
    # Drawn, not fixed: the capped waits are not all alike.
    assert len(set(sleeps.slept[10:])) > 100


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"initial": 0.0}, id="no-initial"),
        pytest.param({"initial": 5.0, "cap": 1.0}, id="cap-below-initial"),
        pytest.param({"factor": 0.5}, id="shrinking"),
        pytest.param({"jitter": 1.5}, id="jitter-over-one"),
    ],
)
def test_a_policy_that_cannot_back_off_is_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        BackoffPolicy(**policy)
