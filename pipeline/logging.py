"""structlog configured once: JSON lines in production, a readable console on a terminal; UTC
timestamps; request ids through contextvars. The libraries' standard-library logs (aiokafka, aiohttp,
asyncio's "exception in callback") go through the same renderer, so that in JSON mode every line is one
JSON object: a bare traceback spread over many lines is what a log shipper splits into many records."""

from __future__ import annotations

import logging
import sys

import structlog

from pipeline.settings import Settings


def configure(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    renderer = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _Handler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            # The traceback of a library's record becomes the `exception` field (JSON) rather than lines
            # after the message; the console renderer prints it as before.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if fmt != "console" else []),
                renderer,
            ],
        )
    )
    # aiokafka and aiohttp log through the standard library; keep them at warning unless debugging. A
    # second configure (tests, commands run in-process) replaces this handler rather than adding one,
    # and leaves handlers it did not install (pytest's log capture) in place.
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure() installs on the root logger."""
