"""Secrets named in settings by reference (`env:NAME` or `file:PATH`), resolved once by the entry point.
The value never appears in a repr, a log line or `--help`: only the reference does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Secret:
    reference: str  # "env:NAME" or "file:PATH": safe to show
    value: str = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    __str__ = __repr__


def resolve(name: str, reference: str, environ: Mapping[str, str]) -> Secret:
    """The secret a reference names. An inline value is refused: it would sit in a config file or a
    process listing and show wherever settings are printed."""
    kind, _, where = reference.partition(":")
    if kind == "env" and where:
        if where not in environ:
            raise ConfigError(f"setting {name}: the variable {where} is not set")
        return Secret(reference, environ[where])
    if kind == "file" and where:
        try:
            # A trailing newline is how editors and `echo` leave files; it is never part of a password.
            return Secret(reference, Path(where).expanduser().read_text().rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"setting {name}: cannot read {where}: {exc.strerror}") from None
    raise ConfigError(f"setting {name}: give it as env:NAME or file:PATH, never inline")
