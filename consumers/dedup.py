"""Step 3: the fast duplicate check, in memory and bounded: the batch itself and recently stored
keys. The sink's unique key stays the authority; this only spares it work. Keys are remembered only
once their batch is committed, so a failed write never turns fresh events into "duplicates"."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Iterable

from pipeline.canonical import CanonicalEvent

Key = tuple[str, str, str, str]


class RecentKeys:
    def __init__(self, capacity: int) -> None:
        self._capacity = max(0, capacity)
        self._keys: OrderedDict[Key, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Key) -> bool:
        return key in self._keys

    def split(
        self, events: Iterable[CanonicalEvent], in_flight: Container[Key] = frozenset()
    ) -> tuple[list[CanonicalEvent], list[CanonicalEvent], set[Key]]:
        """(fresh events, duplicates, the fresh events' keys): a duplicate was stored recently, is in
        the batch being written (`in_flight`, not remembered until its commit) or appears earlier in
        the batch. The keys are what `remember` takes once the batch is committed: built once."""
        fresh: list[CanonicalEvent] = []
        duplicates: list[CanonicalEvent] = []
        seen: set[Key] = set()
        known = self._keys
        for event in events:
            key = event.dedup_key()
            if key in seen or key in known or key in in_flight:
                duplicates.append(event)
            else:
                seen.add(key)
                fresh.append(event)
        return fresh, duplicates, seen

    def remember(self, keys: Iterable[Key]) -> None:
        if self._capacity == 0:
            return
        known = self._keys
        for key in keys:
            known[key] = None
            known.move_to_end(key)
        while len(known) > self._capacity:
            known.popitem(last=False)
