"""The embedded default sink: the `events` table in one SQLite file that several consumer processes share."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from consumers.sinks.base import WriteResult
from consumers.sinks.schema import COUNT, SQLITE_DDL, SQLITE_INSERT, TABLE, SqliteRow, sqlite_row, sqlite_time
from pipeline.canonical import CanonicalEvent
from pipeline.errors import PipelineError, SinkUnavailable, UnstorableEvent

URL_PREFIX = "sqlite:///"

T = TypeVar("T")

# Primary result codes (the low byte of an extended code) that are the event's own fault: too big,
# a constraint such as NOT NULL, a datatype mismatch. Everything else is the database's condition.
_EVENT_FAULTS = {
    18,  # SQLITE_TOOBIG
    19,  # SQLITE_CONSTRAINT
    20,  # SQLITE_MISMATCH
}

# Conditions a connection may have been opened under and a fresh one may not have: read-only,
# I/O error, cannot open. Not SQLITE_BUSY: a second try would only wait out the busy timeout again.
_RETRY_ON_FRESH_CONNECTION = {
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    14,  # SQLITE_CANTOPEN
}

_SQLITE_BUSY = 5

_INDEX = f"{TABLE}_received_at_idx"


def map_error(exc: sqlite3.Error, path: str) -> PipelineError:
    """SinkUnavailable for the database's condition (full, read-only, I/O, locked, cannot open),
    UnstorableEvent for the event's own data."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if code is not None and code & 0xFF in _EVENT_FAULTS:
        return UnstorableEvent(f"sqlite refused the event: {exc} ({name})")
    return SinkUnavailable(f"sqlite {path}: {exc} ({name})")


class SqliteSink:
    """`events` in one SQLite file (WAL). Blocking calls run in a thread, on one connection, which is
    reopened after any failure that is not the event's fault, so the sink recovers by itself once space,
    write permission or the lock comes back."""

    name = "sqlite"

    def __init__(self, path: str, *, busy_timeout: float = 30.0, create: bool = True) -> None:
        self.path = path.removeprefix(URL_PREFIX)
        self.busy_timeout = busy_timeout
        # create=False (for readers such as `eventpipe status`): open only an existing file and table.
        self.create = create
        self.created_table = False
        self._conn: sqlite3.Connection | None = None
        # Taken inside the worker thread, not around the await: a cancelled caller returns at once
        # while its thread still runs, and the next call must not use the connection meanwhile.
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._locked, self._connection)

    async def close(self) -> None:
        await asyncio.to_thread(self._locked, self._drop_connection)

    async def write(self, events: Sequence[CanonicalEvent], stored_at: datetime) -> WriteResult:
        if stored_at.tzinfo is None:
            raise ValueError("stored_at must be timezone-aware")
        if not events:
            return WriteResult()
        return await asyncio.to_thread(self._locked, self._write, events, stored_at)

    async def ping(self) -> bool:
        return await asyncio.to_thread(self._ping)

    async def count(self) -> int:
        return await asyncio.to_thread(self._locked, self._count)

    async def fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement (`eventpipe events`)."""
        return await asyncio.to_thread(self._locked, self._fetch, sql, params)

    def _locked(self, call: Callable[..., T], *args: object) -> T:
        with self._lock:
            try:
                return call(*args)
            except sqlite3.Error as exc:
                error = map_error(exc, self.path)
                if isinstance(error, SinkUnavailable):
                    self._drop_connection()
                raise error from exc
            except OSError as exc:
                self._drop_connection()
                raise SinkUnavailable(f"sqlite {self.path}: {exc}") from exc
            except SinkUnavailable:
                self._drop_connection()
                raise

    def _write(self, events: Sequence[CanonicalEvent], stored_at: datetime) -> WriteResult:
        stamp = sqlite_time(stored_at)
        by_source: dict[str, list[SqliteRow]] = {}
        for event in events:
            by_source.setdefault(event.source, []).append(sqlite_row(event, stamp))
        reused = self._conn is not None
        try:
            return self._insert(self._connection(), by_source)
        except sqlite3.Error as exc:
            # A connection opened earlier carries the conditions of then (e.g. opened read-only while
            # the file was): one more try on a fresh connection before reporting the sink down.
            code = getattr(exc, "sqlite_errorcode", None)
            if not reused or code is None or code & 0xFF not in _RETRY_ON_FRESH_CONNECTION:
                raise
        self._drop_connection()
        return self._insert(self._connection(), by_source)

    def _insert(self, conn: sqlite3.Connection, by_source: dict[str, list[SqliteRow]]) -> WriteResult:
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted: dict[str, int] = {}
            for source, rows in by_source.items():
                before = conn.total_changes
                try:
                    conn.executemany(SQLITE_INSERT, rows)
                except (OverflowError, UnicodeError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
                    # Raised while binding a value SQLite cannot hold (an int beyond 64 bits, a lone
                    # surrogate): the event's data, not the database.
                    raise UnstorableEvent(f"sqlite cannot bind the event: {exc}") from exc
                # total_changes is a C int that wraps after 2**31 rows on one connection.
                inserted[source] = (conn.total_changes - before) & 0xFFFFFFFF
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return WriteResult(inserted)

    def _count(self) -> int:
        row = self._connection().execute(COUNT).fetchone()
        return int(row[0])

    def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._connection().execute(sql, tuple(params)).fetchall()]

    def _ping(self) -> bool:
        # Bounded wait for the connection: a ping must answer within a couple of seconds.
        if not self._lock.acquire(timeout=2.0):
            return False
        try:
            self._connection().execute("SELECT count(*) FROM sqlite_master").fetchone()
            return True
        except (sqlite3.Error, OSError, PipelineError):
            self._drop_connection()
            return False
        finally:
            self._lock.release()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self.create:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            target, uri = self.path, False
        else:
            if not Path(self.path).exists():
                raise SinkUnavailable(f"sqlite {self.path}: no such database file")
            # mode=rw: a file gone by now is an error (SQLITE_CANTOPEN), not a new, empty database.
            target, uri = Path(self.path).absolute().as_uri() + "?mode=rw", True
        # timeout= is SQLite's busy timeout: how long a write waits for another process's write lock.
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's implicit ones.
        conn = sqlite3.connect(
            target, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False, uri=uri
        )
        try:
            self._use_wal(conn)
            # FULL: the commit is on disk before the consumer commits its Kafka offsets, so a power
            # cut cannot lose rows whose records Kafka no longer redelivers.
            conn.execute("PRAGMA synchronous = FULL")
            if self.create:
                self._ensure_table(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """WAL: readers never block the writer, and writers of several processes take turns."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL needs an exclusive lock; when processes starting together
                # would deadlock on it, SQLite answers SQLITE_BUSY at once, without the busy handler.
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise SinkUnavailable(f"sqlite {self.path}: cannot use WAL (journal_mode is {mode})")

    def _ensure_table(self, conn: sqlite3.Connection) -> None:
        # Read first: a database whose table exists stays usable for reads (count) when it is read-only,
        # and processes starting together do not queue on the write lock.
        if _has_table(conn):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            created = not _has_table(conn)
            for statement in SQLITE_DDL:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self.created_table = self.created_table or created

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Discarded because it failed; an error closing it adds nothing, the next call reopens.
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _has_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ? OR type = 'index' AND name = ?",
        (TABLE, _INDEX),
    ).fetchone()
    return int(row[0]) == 2


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # SQLite may have rolled back already (e.g. after SQLITE_FULL); the caller's error is the news.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
