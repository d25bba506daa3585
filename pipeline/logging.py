"""structlog configured once: JSON lines in production, a readable console on a terminal; UTC
timestamps; request ids through contextvars."""

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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiokafka and aiohttp log through the standard library; keep them at warning unless debugging.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")
