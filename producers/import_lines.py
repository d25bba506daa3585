"""The pure side of `eventpipe import`: reading a file of request bodies line by line in bounded
memory, judging each line as the receiver would judge the same body, and the reject record of a
refused line (its number and the vendor's own reply)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from pipeline.formats.base import Accepted, Problem, Rejection, Reply, VendorFormat

READ_CHUNK = 64 * 1024
# The header where a vendor whose error body is fixed names the offending field (DFINERY).
DETAIL_HEADER = "X-Eventpipe-Error"


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    body: bytes | None  # None when the line is longer than the limit (it was not kept)
    size: int

    @property
    def blank(self) -> bool:
        return self.body is not None and not self.body.strip()


def read_lines(stream: IO[bytes], limit: int) -> Iterator[Line]:
    """Every line without its line break. A line longer than `limit` is skipped over in chunks, never
    held whole, and yielded with no body."""
    number = 0
    while True:
        chunk = stream.readline(limit + 2)  # room for the limit and a CRLF
        if not chunk:
            return
        number += 1
        if not chunk.endswith(b"\n") and len(chunk) == limit + 2:
            size = len(chunk)
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(READ_CHUNK)
                size += len(chunk)
            yield Line(number, None, size - _break_length(chunk))
            continue
        body = chunk[: len(chunk) - _break_length(chunk)]
        yield Line(number, body if len(body) <= limit else None, len(body))


def _break_length(chunk: bytes) -> int:
    if chunk.endswith(b"\r\n"):
        return 2
    return 1 if chunk.endswith(b"\n") else 0


def judge(
    fmt: VendorFormat, route: str, line: Line, limit: int, received_at: datetime, future_skew_seconds: float
) -> Accepted | Rejection:
    """What the receiver would answer this body on this route (auth aside)."""
    if line.body is None:
        return Rejection(Problem.TOO_LARGE, f"line of {line.size} bytes is above the limit of {limit}")
    try:
        return fmt.validate(line.body, route, received_at, future_skew_seconds)
    except Rejection as rejection:
        return rejection


def reject_record(line: Line, reply: Reply) -> dict[str, Any]:
    """A refused line for the reject file: the status and body the receiver would have replied."""
    text = reply.body.decode("utf-8", errors="replace")
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text
    record: dict[str, Any] = {"line": line.number, "status": reply.status, "reply": body}
    detail = reply.headers.get(DETAIL_HEADER)
    if detail:
        record["detail"] = detail
    return record


@dataclass
class ImportTally:
    lines: int = 0
    blank: int = 0
    sent_lines: int = 0
    sent_events: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # by HTTP status
    unsent_from: int | None = None  # first line not sent when Kafka gave out

    @property
    def refused_lines(self) -> int:
        return sum(self.refused.values())

    def render(self, path: str, topic: str, rejects: str | None) -> str:
        refused = ", ".join(f"{n} × {status}" for status, n in sorted(self.refused.items())) or "none"
        lines = [
            f"import {path}: {self.lines} lines ({self.blank} blank, skipped)",
            f"  sent:    {self.sent_lines} lines, {self.sent_events} events, onto {topic}",
            f"  refused: {self.refused_lines} lines ({refused})"
            + (f", written to {rejects}" if rejects and self.refused_lines else ""),
        ]
        if self.unsent_from is not None:
            lines.append(
                f"  NOT SENT from line {self.unsent_from} on: Kafka did not take the records. Lines sent "
                "already are safe to send again (their event ids repeat), so re-run on the rest."
            )
        return "\n".join(lines)
