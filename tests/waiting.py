"""Waiting in tests: poll a condition until a deadline and fail saying what never happened. The one
place a test sleeps, between polls."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.05

Detail = str | Callable[[], object]


def _failure(seconds: float, what: Detail) -> AssertionError:
    detail = what() if callable(what) else what
    return AssertionError(f"timed out after {seconds}s waiting for {detail}")


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], seconds: float = 30.0, what: Detail = "condition"
) -> None:
    """Poll `predicate` (sync or async) until it holds; `what` may be a callable that describes the
    state at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise _failure(seconds, what)
        await asyncio.sleep(POLL_SECONDS)


def wait_until(predicate: Callable[[], bool], seconds: float = 30.0, what: Detail = "condition") -> None:
    """The same, for tests that drive subprocesses without an event loop."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise _failure(seconds, what)
        time.sleep(POLL_SECONDS)
