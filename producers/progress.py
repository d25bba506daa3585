"""Progress of a long-running producer command (loadgen, import): on a terminal a live bar with the
command's status on the line below it; otherwise (CI logs, files, pipes) a plain line every few
seconds."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

LINE_INTERVAL_SECONDS = 5.0


class _StatusLine:
    """The status text under the bar, folded rather than cut on a narrow terminal."""

    def __init__(self) -> None:
        self.text = ""

    def __rich__(self) -> Text:
        return Text(self.text, overflow="fold")


class ProgressDisplay:
    def __init__(
        self, title: str, total: float, *, file: TextIO | None = None, interval: float = LINE_INTERVAL_SECONDS
    ) -> None:
        self._title = title
        self._total = total
        self._file = file or sys.stdout
        self._interval = interval
        self._console = Console(file=self._file)
        self.live = self._console.is_terminal
        self._progress: Progress | None = None
        self._display: Live | None = None
        self._task: TaskID | None = None
        self._status_line = _StatusLine()
        self._last_line = 0.0
        self._completed = 0.0
        self._status = ""
        self._printed = ""

    def start(self) -> None:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self._console,
            )
            self._task = self._progress.add_task(self._title, total=self._total)
            self._display = Live(
                Group(self._progress, self._status_line), console=self._console, refresh_per_second=4
            )
            self._display.start()
        self._last_line = time.monotonic()

    def update(self, completed: float, status: str) -> None:
        self._completed, self._status = completed, status
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed)
            self._status_line.text = status
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._line()

    def stop(self) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None
            self._progress = None
        elif self._printed != self._status:
            self._line()

    def _line(self) -> None:
        self._printed = self._status
        share = f" {100 * self._completed / self._total:.0f}%" if self._total else ""
        print(f"{self._title}:{share} {self._status}", file=self._file, flush=True)

    def __enter__(self) -> ProgressDisplay:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
