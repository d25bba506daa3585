"""Reading a request body within the limits: size after decompression (aiohttp decompresses gzip and
deflate as it reads, in bounded chunks), read time, content type."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from pipeline.formats.base import Problem, Rejection

SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "x-gzip"})


def check_content_type(request: web.Request, json_required: bool) -> None:
    if not json_required:
        return
    ctype = request.content_type.lower()
    if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
        return
    raise Rejection(
        Problem.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type must be application/json, not {request.content_type or 'missing'}",
    )


async def read_body(request: web.Request, limit: int, read_seconds: float) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise Rejection(Problem.UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {encoding!r} is not supported")
    declared = request.content_length
    if declared is not None and declared > limit and encoding in ("", "identity"):
        raise Rejection(Problem.TOO_LARGE, f"body of {declared} bytes is above the limit of {limit}")
    reader = request.content
    try:
        if reader.is_eof():
            # The whole body came with the headers (most event requests): take it without a timer.
            body = reader.read_nowait()
            if len(body) > limit:
                raise Rejection(Problem.TOO_LARGE, f"body is above the limit of {limit} bytes")
            return body
    except (RequestPayloadError, BadHttpMessage, ValueError) as exc:
        raise Rejection(Problem.MALFORMED, f"body could not be read: {exc}") from exc
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(read_seconds):
            async for chunk in reader.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise Rejection(Problem.TOO_LARGE, f"body is above the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise Rejection(Problem.TIMEOUT, f"request body not received within {read_seconds:g}s") from exc
    except (RequestPayloadError, BadHttpMessage, ValueError) as exc:
        # aiohttp raises these while decoding a broken gzip/deflate stream or chunked body
        raise Rejection(Problem.MALFORMED, f"body could not be read: {exc}") from exc
    return b"".join(chunks)
