"""Library logs (aiokafka, asyncio) come out as JSON lines like the pipeline's own: a traceback is a
field of its line, not lines of its own that a log shipper would take for separate records."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from pipeline import logging as ep_logging
from pipeline.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() binds the captured stderr, which is closed after the test: later tests must not log
    into it."""
    saved, handlers, level = structlog.get_config(), logging.root.handlers[:], logging.root.level
    yield
    structlog.configure(**saved)
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line]


def test_library_logs_are_json_lines_with_the_traceback_as_a_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ep_logging.configure(Settings(log_format="json", log_level="info"))
    logging.getLogger("aiokafka").warning("Unable connect to node with id %s", 2)
    try:
        raise KeyError("batch")
    except KeyError:
        logging.getLogger("asyncio").error("Exception in callback cb", exc_info=True)
    logging.getLogger("aiokafka").info("below the libraries' level")
    structlog.get_logger().info("own_event", n=1)

    lines = _lines(capsys.readouterr().err)  # every line parses: no bare traceback lines
    assert [(line.get("logger"), line["event"]) for line in lines] == [
        ("aiokafka", "Unable connect to node with id 2"),
        ("asyncio", "Exception in callback cb"),
        (None, "own_event"),
    ]
    assert "KeyError: 'batch'" in str(lines[1]["exception"])
    assert lines[0]["level"] == "warning" and "timestamp" in lines[0]


def test_configuring_again_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(log_format="json", log_level="info")
    ep_logging.configure(settings)
    ep_logging.configure(settings)
    logging.getLogger("aiohttp.server").error("once")
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["once"]
