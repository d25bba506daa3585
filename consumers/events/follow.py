"""Which rows of each poll are new to someone following the table. A poll reads every row from
`since()` on; where positions can come into view out of order (PostgreSQL, see
consumers/sinks/reader.py) that is some way behind the newest row seen, and rows already shown are
skipped by their key. Keys are forgotten once they fall behind the point polls read from."""

from __future__ import annotations

from collections.abc import Sequence

from consumers.sinks.reader import Dialect, Key, StoredEvent


class Follower:
    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self.newest: int | None = None
        self._seen: dict[Key, int] = {}

    def since(self) -> int | None:
        """Where the next poll reads from; None: from the start (nothing seen yet)."""
        return None if self.newest is None else self._dialect.back(self.newest)

    def take(self, rows: Sequence[StoredEvent]) -> list[StoredEvent]:
        """The rows not seen before, in the order given; all of them count as seen from now on."""
        fresh = [row for row in rows if row.key not in self._seen]
        for row in rows:
            self._seen[row.key] = row.position
            if self.newest is None or row.position > self.newest:
                self.newest = row.position
        floor = self.since()
        if floor is not None:
            self._seen = {key: at for key, at in self._seen.items() if at >= floor}
        return fresh
