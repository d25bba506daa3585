"""How a reload reaches the workers of `--workers N`: the parent reads the tenants file once per
request and keeps a numbered copy in its private run directory, then signals the workers; each worker
judges every copy newer than the last it saw, in order. Reading one copy rather than the file itself
means every worker judges the same bytes even when the file is rewritten mid-reload, and a worker
signalled twice in quick succession still sees each request once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from producers.receiver.tenants_reload import ReloadRefused

_CONTENT = ".toml"
_UNREADABLE = ".unreadable"  # the reason the parent could not read the file, instead of its bytes


class Snapshots:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, seq: int, suffix: str) -> Path:
        return self._directory / f"tenants-{seq:08d}{suffix}"

    def write(self, seq: int, content: bytes | ReloadRefused) -> None:
        """Atomically, so a worker never reads a copy half written. The run directory is the parent's
        own (mode 0700): the copies may hold JWT secrets, as the file does."""
        if isinstance(content, ReloadRefused):
            data, suffix = str(content).encode(), _UNREADABLE
        else:
            data, suffix = content, _CONTENT
        target = self._path(seq, suffix)
        temporary = target.with_name("." + target.name)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, target)

    def after(self, seq: int) -> Iterator[tuple[int, bytes | ReloadRefused]]:
        """Every request after `seq`, oldest first."""
        found: list[tuple[int, Path]] = []
        for path in self._directory.glob("tenants-*"):
            number = int(path.stem.removeprefix("tenants-"))
            if number > seq and path.suffix in (_CONTENT, _UNREADABLE):
                found.append((number, path))
        for number, path in sorted(found):
            data = path.read_bytes()
            yield number, ReloadRefused(data.decode()) if path.suffix == _UNREADABLE else data
