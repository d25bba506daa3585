"""A request written by hand on a raw connection, so a test decides when (and whether) each part of the
body is sent: how the receiver answers before the body has arrived."""

from __future__ import annotations

import asyncio

from tests.corpus import Case


def head(case: Case, content_length: int, extra: str = "") -> bytes:
    query = "&".join(f"{k}={v}" for k, v in case.query.items())
    target = case.path + (f"?{query}" if query else "")
    headers = "".join(f"{k}: {v}\r\n" for k, v in case.headers.items())
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\n{headers}{extra}Content-Length: {content_length}\r\n\r\n"
    ).encode()


def padded(case: Case, size: int) -> bytes:
    """The case's body grown to `size` bytes by leading whitespace, which JSON ignores."""
    assert len(case.body) <= size
    return b" " * (size - len(case.body)) + case.body


async def reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names lower-cased) and body of one response."""
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body
