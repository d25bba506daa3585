"""Running the `eventpipe` command as a separate process from an async test, as an operator runs it
from a shell, while the test's own event loop keeps serving the receiver and consumers it started."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def eventpipe(*args: str, env: dict[str, str]) -> Finished:
    """Callers bound the wait with `asyncio.timeout` where they need to; pytest-timeout bounds the rest."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventpipe",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())
