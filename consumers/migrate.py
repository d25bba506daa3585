"""`eventpipe migrate`: create the sink's `events` table (what every consumer also does on start)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from consumers.sinks import open_sink


async def migrate(url: str) -> str:
    """Create the `events` table if missing and say what was done, in one line."""
    sink = open_sink(url)
    await sink.start()
    try:
        rows = await sink.count()
    finally:
        await sink.close()
    where = redact(url)
    # Both sinks record whether their start() created the table; the Sink protocol need not know.
    if getattr(sink, "created_table", False):
        return f"created table events (and its received_at index) in {where}"
    return f"table events already present in {where} ({rows} rows); nothing to do"


def redact(url: str) -> str:
    """The URL without its password, fit for a terminal or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
