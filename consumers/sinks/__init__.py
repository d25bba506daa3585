"""The consumer's storage sinks, chosen by the sink URL's scheme."""

from __future__ import annotations

from consumers.sinks.base import Sink, WriteResult
from consumers.sinks.postgres import URL_SCHEMES as POSTGRES_SCHEMES
from consumers.sinks.postgres import PostgresSink
from consumers.sinks.sqlite import URL_PREFIX as SQLITE_PREFIX
from consumers.sinks.sqlite import SqliteSink

__all__ = ["PostgresSink", "Sink", "SqliteSink", "WriteResult", "open_sink"]


def open_sink(url: str, *, create: bool = True) -> Sink:
    """The sink for `sqlite:///path.db` (relative; `sqlite:////abs/path.db` is absolute) or
    `postgresql://…` / `postgres://…`. Nothing is opened until first used. With create=False nothing
    is created either (no file, no table): a reader sees the sink as it is."""
    if url.startswith(SQLITE_PREFIX):
        path = url.removeprefix(SQLITE_PREFIX)
        if not path:
            raise ValueError(f"sink URL {url!r} names no file")
        return SqliteSink(path, create=create)
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresSink(url, create=create)
    raise ValueError(f"unsupported sink URL {url!r}: use sqlite:///path.db or postgresql://…")
