"""Test tiers (STYLE.md item 9): unit tests cannot open sockets; tests marked `kafka` / `postgres` use
the real services that .ci/run started. With CI=true a missing service fails the run; elsewhere the
test is skipped with a message saying how to start the service."""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KAFKA_BOOTSTRAP = os.environ.get("EVENTPIPE_TEST_KAFKA", "127.0.0.1:9092")
POSTGRES_DSN = os.environ.get("EVENTPIPE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# Markers whose tests may talk to the network (loopback) and to local services.
NETWORK_MARKERS = ("kafka", "postgres", "faults", "network", "browser")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _service_or_skip(name: str, host: str, port: int, how: str) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}; {how}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    host, _, port = KAFKA_BOOTSTRAP.partition(":")
    _service_or_skip("Kafka", host, int(port), "start it with `eventpipe kafka start`")
    return KAFKA_BOOTSTRAP


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    from urllib.parse import urlparse

    url = urlparse(POSTGRES_DSN)
    _service_or_skip(
        "PostgreSQL",
        url.hostname or "127.0.0.1",
        url.port or 5432,
        "run .ci/run, or set EVENTPIPE_TEST_POSTGRES",
    )
    return POSTGRES_DSN


@pytest.fixture(autouse=True)
def _block_sockets_in_unit_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test without a network marker and outside tests/receiver cannot open a socket: a unit test
    that quietly does I/O is a bug."""
    marked = any(request.node.get_closest_marker(m) for m in NETWORK_MARKERS)
    in_receiver_tier = "tests/receiver" in str(request.node.path) or "aiohttp_client" in request.fixturenames
    if marked or in_receiver_tier:
        yield
        return

    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if self.family == socket.AF_UNIX:
            real_connect(self, address)  # asyncio's self-pipe and the like are not network I/O
            return
        raise RuntimeError(f"unit test tried to open a network connection to {address!r}; mark it")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


# Statuses seen per fuzzing test and figures measured by the hostile-input and browser tests, printed at
# the end of the run: the numbers a report cites.
FUZZ_TALLY = pytest.StashKey[dict[str, Counter[int]]]()
FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def fuzz_tally(pytestconfig: pytest.Config) -> dict[str, Counter[int]]:
    return pytestconfig.stash.setdefault(FUZZ_TALLY, {})


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> list[str]:
    return pytestconfig.stash.setdefault(FIGURES, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(FUZZ_TALLY, {})
    lines = config.stash.get(FIGURES, [])
    if not (tally or lines):
        return
    terminalreporter.section("figures: fuzzing, hostile input, browsers")
    for name, statuses in sorted(tally.items()):
        server_errors = sum(n for status, n in statuses.items() if status >= 500)
        spread = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        terminalreporter.write_line(f"{name}: {statuses.total()} cases, 5xx seen: {server_errors} ({spread})")
    for line in lines:
        terminalreporter.write_line(line)
