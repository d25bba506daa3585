"""Reading a request body within the limits: size after decompression, size on the wire, read time,
content type. The receiver decompresses gzip and deflate itself (inflate.py) and is served with
aiohttp's own decoding off (SERVER_OPTIONS): aiohttp would go on decompressing a refused body to the end
while it drains the connection, so a 1 MB bomb would stall the worker for seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from pipeline.formats.base import Problem, Rejection
from producers.receiver.inflate import ENCODINGS as COMPRESSED
from producers.receiver.inflate import Inflater

# How the receiver's app must be served (web.AppRunner / aiohttp_client's server_kwargs).
SERVER_OPTIONS: Mapping[str, Any] = {"auto_decompress": False}

SUPPORTED_ENCODINGS = frozenset({"", "identity", *COMPRESSED})
CHUNK_BYTES = 64 * 1024


# Charsets a JSON body may be declared in: JSON is UTF-8 (RFC 8259), and ASCII is a subset of it.
_JSON_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})


def check_content_type(request: web.Request, json_required: bool, beacons: bool = False) -> None:
    """`beacons`: the route is browser-facing, so text/plain is taken as JSON too. navigator.sendBeacon
    with a string sends `text/plain;charset=UTF-8`, and a page may post text/plain because it needs no
    CORS preflight; the body is then validated as the route's JSON like any other."""
    if not json_required:
        return
    if request.headers.get("Content-Type") == "application/json":
        return  # what nearly every client sends, decided without parsing the header (2 % of a request)
    ctype = request.content_type.lower()
    if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
        return
    if beacons and ctype == "text/plain" and (request.charset or "utf-8").lower() in _JSON_CHARSETS:
        return
    allowed = "application/json or text/plain (UTF-8)" if beacons else "application/json"
    raise Rejection(
        Problem.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type must be {allowed}, not {request.content_type or 'missing'}",
    )


def wire_limit(limit: int) -> int:
    """Bytes a body may take on the wire: compression never adds more than deflate's framing (5 bytes
    per 64 KiB stored block) and a gzip header and trailer to what it holds."""
    return limit + limit // 8192 + 1024


async def read_body(request: web.Request, limit: int, read_seconds: float) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise Rejection(Problem.UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {encoding!r} is not supported")
    compressed = encoding in COMPRESSED
    on_wire_limit = wire_limit(limit) if compressed else limit
    declared = request.content_length
    if declared is not None and declared > on_wire_limit:
        raise Rejection(Problem.TOO_LARGE, f"body of {declared} bytes is above the limit of {limit}")
    # Served with aiohttp's decoding on after all (it sets total_compressed_bytes when it decodes),
    # the bytes arrive decoded already. An empty body's reader has no such attribute.
    decoded_by_aiohttp = getattr(request.content, "total_compressed_bytes", None) is not None
    inflater = Inflater(encoding, limit) if compressed and not decoded_by_aiohttp else None
    reader = request.content
    chunks = []
    size = 0
    on_wire = 0

    def take(chunk: bytes) -> None:
        nonlocal size, on_wire
        on_wire += len(chunk)
        if on_wire > on_wire_limit:
            raise Rejection(Problem.TOO_LARGE, f"body is above the limit of {limit} bytes")
        data = inflater.feed(chunk) if inflater is not None else chunk
        size += len(data)
        if size > limit:
            raise Rejection(Problem.TOO_LARGE, f"body is above the limit of {limit} bytes")
        chunks.append(data)

    try:
        if reader.is_eof():
            # The whole body came with the headers (most event requests): take it without a timer.
            take(reader.read_nowait())
        else:
            async with asyncio.timeout(read_seconds):
                async for chunk in reader.iter_chunked(CHUNK_BYTES):
                    take(chunk)
        if inflater is not None:
            inflater.finish()
    except TimeoutError as exc:
        raise Rejection(Problem.TIMEOUT, f"request body not received within {read_seconds:g}s") from exc
    except (RequestPayloadError, BadHttpMessage, ValueError) as exc:
        # aiohttp raises these for a broken chunked body (or a broken compressed one when it decodes);
        # their text names parser internals, so the client is told only what it can act on.
        as_encoded = f" as Content-Encoding {encoding}" if compressed else ""
        raise Rejection(Problem.MALFORMED, f"body could not be read{as_encoded}") from exc
    return b"".join(chunks)
