"""The fault suite's fixtures: a rig per test (receiver and consumers as real processes, a ledger and
its sender), the private services a fault may break, and the ledger table printed at the end of the
run (in CI's output too, not only with -s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import topics
from tests.corpus import CORPUS
from tests.faults.ledger import Figures, Ledger
from tests.faults.rig import Rig
from tests.faults.services import PrivateBroker, PrivatePostgres, SmallDisk
from tests.integration.conftest import sink_url
from tests.kafka_util import unique_settings
from tests.ports import free_port

__all__ = ["sink_url"]

FIGURES = pytest.StashKey[list[Figures]]()
FAILED = pytest.StashKey[bool]()

RigFactory = Callable[..., Awaitable[Rig]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:  # type: ignore[attr-defined]
        item.stash[FAILED] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if not figures:
        return
    terminalreporter.section("fault ledgers")
    columns = (
        "fault",
        "acknowledged",
        "stored",
        "lost",
        "duplicated",
        "phantom",
        "ambiguous",
        "outage 2xx",
        "outage 503",
        "outage 2xx %",
        "recovery s",
        "storing gap s",
        "max wait s",
    )
    rows = [
        (
            f.fault,
            f.acknowledged,
            f.stored,
            len(f.lost),
            len(f.duplicated),
            len(f.phantom),
            f.ambiguous,
            "-" if f.outage is None else sum(n for s, n in f.outage.items() if s.startswith("2")),
            "-" if f.outage is None else f.outage.get("503", 0),
            "-" if f.answered_2xx is None else f"{100 * f.answered_2xx:.1f}",
            "-" if f.recovery_seconds is None else f"{f.recovery_seconds:.1f}",
            "-" if f.storing_gap_seconds is None else f"{f.storing_gap_seconds:.1f}",
            "-" if f.longest_wait_seconds is None else f"{f.longest_wait_seconds:.1f}",
        )
        for f in figures
    ]
    width = max(len(columns[0]), *(len(r[0]) for r in rows))
    terminalreporter.write_line(f"{columns[0]:<{width}} " + " ".join(f"{c:>12}" for c in columns[1:]))
    for row in rows:
        terminalreporter.write_line(f"{row[0]:<{width}} " + " ".join(f"{v!s:>12}" for v in row[1:]))


@pytest.fixture
async def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Builds the test's rig: its own topics, group and sink, the receiver on a free port, quick
    batches and a short backoff cap so that recovery is prompt."""
    rigs: list[Rig] = []
    http = aiohttp.ClientSession()
    figures = request.config.stash.setdefault(FIGURES, [])

    async def make(fault: str, bootstrap: str, sink: str, **overrides: Any) -> Rig:
        defaults: dict[str, Any] = {
            "batch_max_wait_ms": 100,
            "sink_retry_max_seconds": 1.0,
            "produce_timeout_seconds": 2.0,
            "drain_seconds": 10.0,
        }
        settings = unique_settings(
            bootstrap,
            sink=sink,
            tenants=str(CORPUS / "tenants.toml"),
            http_port=free_port(),
            data_dir=str(tmp_path),
            **{**defaults, **overrides},
        )
        await topics.ensure(settings)
        logs = tmp_path / f"logs-{len(rigs)}"
        logs.mkdir()
        rig = Rig(settings, logs, http, Ledger(fault), figures.append)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        if request.node.stash.get(FAILED, False):
            print(f"\n{rig.tails()}")
        await rig.close()
    await http.close()


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    # One broker for the module's tests (each restarts it; starting one costs seconds), outside
    # the event loop: kafka_local runs its own.
    broker = PrivateBroker(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
async def private_broker(_module_broker: PrivateBroker) -> PrivateBroker:
    """The private broker, running (again, if an earlier test left it down)."""
    await asyncio.to_thread(_module_broker.start)
    return _module_broker


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    try:
        disk.mount()
        yield disk
    finally:
        disk.close()
