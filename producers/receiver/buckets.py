"""Where the receiver keeps its token buckets: in the process (one receiver process), or in a small
file mapped into every worker of `--workers N`, so that a tenant gets its limit once, whichever worker
the kernel hands its connections to.

The shared table is a header and one (tokens, stamp) pair of doubles per bucket slot. Updates are
serialised with flock(2) on the file: the critical section is a read, a little arithmetic and a write
(about a microsecond), and the kernel drops the lock of a worker that dies holding it, so a killed
worker cannot wedge the others (a multiprocessing.Lock would stay taken; multiprocessing.shared_memory
on Python 3.11 also lets each spawned worker's resource tracker unlink the segment when it exits).
Stamps are time.monotonic() readings, which on Linux come from one system-wide clock."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pipeline.errors import ConfigError
from pipeline.rate_limits import BucketKey, LimitTable
from pipeline.token_bucket import ADMITTED, Bucket, Decision, Limit, full, take

_MAGIC = b"EPBUCKT1"
_HEADER = struct.Struct("<8sQ")  # magic, slot count
_SLOT = struct.Struct("<dd")  # tokens, stamp


class BucketStore(Protocol):
    def take(self, slot: int, limit: Limit, now: float) -> Decision: ...

    def close(self) -> None: ...


class LocalBuckets:
    """The buckets of a single receiver process."""

    def __init__(self, limits: Sequence[Limit], now: float) -> None:
        self._buckets = [full(limit, now) for limit in limits]

    def take(self, slot: int, limit: Limit, now: float) -> Decision:
        self._buckets[slot], decision = take(self._buckets[slot], limit, now)
        return decision

    def close(self) -> None:
        pass


class SharedBuckets:
    """The buckets of all receiver workers, in a file the parent creates before it starts them."""

    def __init__(self, path: Path, slots: int) -> None:
        self._fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(self._fd).st_size
            if size != _HEADER.size + slots * _SLOT.size:
                raise ConfigError(f"{path}: {size} bytes do not hold {slots} rate limit buckets")
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        magic, count = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC or count != slots:
            self.close()
            raise ConfigError(f"{path} is not a bucket table for {slots} slots")

    @staticmethod
    def create(path: Path, limits: Sequence[Limit], now: float) -> None:
        """Write a table of full buckets (the parent, before any worker runs)."""
        data = bytearray(_HEADER.size + len(limits) * _SLOT.size)
        _HEADER.pack_into(data, 0, _MAGIC, len(limits))
        for slot, limit in enumerate(limits):
            _SLOT.pack_into(data, _HEADER.size + slot * _SLOT.size, *full(limit, now))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def take(self, slot: int, limit: Limit, now: float) -> Decision:
        offset = _HEADER.size + slot * _SLOT.size
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            bucket, decision = take(Bucket(*_SLOT.unpack_from(self._map, offset)), limit, now)
            _SLOT.pack_into(self._map, offset, *bucket)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return decision

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class RateLimiter:
    """acquire(key, now): may this caller send one more request now, and if not, in how many seconds."""

    def __init__(self, table: LimitTable, store: BucketStore) -> None:
        self._table = table
        self._store = store

    @classmethod
    def local(cls, table: LimitTable, now: float) -> RateLimiter:
        return cls(table, LocalBuckets(table.limits, now))

    @classmethod
    def shared(cls, table: LimitTable, path: Path) -> RateLimiter:
        return cls(table, SharedBuckets(path, len(table.limits)))

    def acquire(self, key: BucketKey, now: float) -> Decision:
        entry = self._table.lookup(key)
        if entry is None:
            return ADMITTED
        slot, limit = entry
        return self._store.take(slot, limit, now)

    def close(self) -> None:
        self._store.close()
