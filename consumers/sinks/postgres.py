"""The PostgreSQL sink. A batch is COPYed straight into `events` in one transaction: the common case,
since the worker's in-memory dedup already dropped the duplicates it knows of. When the key refuses
a row (a redelivery after a crash, a replay, another consumer holding the same event), that
transaction rolls back and the batch goes the careful way: COPY into a per-connection staging table,
then one INSERT … ON CONFLICT DO NOTHING into `events`. The careful way costs the server more per row,
so it is kept for after a conflict, and then for a while, rather than pay for a refused COPY on every
batch of a replay (the measurements: docs/PERFORMANCE.md, "Where the defaults come from")."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from consumers.sinks.base import WriteResult
from consumers.sinks.schema import (
    COUNT,
    POSTGRES_DDL,
    POSTGRES_INSERT,
    POSTGRES_STAGING,
    POSTGRES_STAGING_DDL,
    TABLE,
    PostgresRow,
    postgres_row,
)
from pipeline.canonical import COLUMNS, CanonicalEvent
from pipeline.errors import PipelineError, SinkUnavailable, UnstorableEvent

URL_SCHEMES = ("postgresql://", "postgres://")

# Serialises `CREATE TABLE IF NOT EXISTS` across processes: run concurrently, two of them can both
# pass the existence check and one then fails on the catalog's unique index.
_MIGRATE_LOCK = 0x6576_656E_7470_6970  # "eventpip"

# SQLSTATE classes that are the event's own data: 22 data exception (bad value, NUL, out of range),
# 23 integrity constraint (NOT NULL), 54 program limit (an event id too long for the key's index).
_EVENT_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)
# Everything the connection, server or network can do to a batch: refused, lost, shutting down,
# too many connections, disk full, timeouts, serialization failures.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg_base.InternalClientError,
    OSError,  # includes ConnectionError and TimeoutError (asyncio.TimeoutError since 3.11)
)

# Batches written the careful way after a conflict before a direct COPY is tried again: a replay or
# a redelivered backlog conflicts batch after batch, and each refused COPY is a wasted write.
CAREFUL_BATCHES_AFTER_CONFLICT = 20

_PING_FAILURES: tuple[type[BaseException], ...] = (PipelineError, *_UNAVAILABLE)


def map_error(exc: BaseException) -> PipelineError | None:
    """The pipeline error for an exception raised while writing, or None when it is neither the
    database's condition nor the event's data (a bug: let it propagate)."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, _EVENT_FAULTS):
        return UnstorableEvent(f"postgresql refused the event: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg_base.DataError):  # an InterfaceError, so before the next test
        return UnstorableEvent(f"postgresql cannot encode the event: {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return SinkUnavailable(f"postgresql: {type(exc).__name__}: {exc}")
    if isinstance(exc, OverflowError | ValueError | TypeError):
        # asyncpg encodes every value client-side during COPY; these come from a value the column
        # type cannot take (an int beyond 64 bits, a lone surrogate in a string).
        return UnstorableEvent(f"postgresql cannot encode the event: {type(exc).__name__}: {exc}")
    return None


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(POSTGRES_STAGING_DDL)


class PostgresSink:
    """`events` in PostgreSQL through a small asyncpg pool. The pool replaces a lost connection on the
    next acquire, so the sink recovers by itself when the server is back."""

    name = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        create: bool = True,
    ) -> None:
        self.dsn = dsn
        # create=False (for readers such as `eventpipe status`): no DDL; a missing table is an error.
        self.create = create
        self.created_table = False
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._careful_batches = 0  # left before the next direct COPY is tried
        self.direct_writes = 0  # batches stored by the direct COPY (tests and the bench read these)
        self.careful_writes = 0

    async def start(self) -> None:
        await self._ensure_pool()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._connect_timeout)
        except _UNAVAILABLE:  # TimeoutError is an OSError
            pool.terminate()  # a connection stuck on a dead server must not hold up shutdown

    def write_carefully(self, batches: int) -> None:
        """Take the careful way for the next `batches` writes, as after a conflict (when conflicts are
        known to come, and for the bench's comparison of the two ways)."""
        self._careful_batches = max(self._careful_batches, batches)

    async def write(self, events: Sequence[CanonicalEvent], stored_at: datetime) -> WriteResult:
        if stored_at.tzinfo is None:
            raise ValueError("stored_at must be timezone-aware")
        if not events:
            return WriteResult()
        rows = [postgres_row(event, stored_at) for event in events]
        pool = await self._ensure_pool()
        try:
            if self._careful_batches == 0:
                inserted = await self._copy_direct(pool, rows)
                if inserted is not None:
                    self.direct_writes += 1
                    return WriteResult(inserted)
                self._careful_batches = CAREFUL_BATCHES_AFTER_CONFLICT
            self._careful_batches -= 1
            inserted = await self._copy_careful(pool, rows)
            self.careful_writes += 1
            return WriteResult(inserted)
        except Exception as exc:
            error = map_error(exc)
            if error is None:
                raise
            raise error from exc

    async def _copy_direct(self, pool: asyncpg.Pool, rows: list[PostgresRow]) -> dict[str, int] | None:
        """Every row inserted, counted by source; None when the key refused one (nothing is stored)."""
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn, conn.transaction():
                await conn.copy_records_to_table(
                    TABLE, records=rows, columns=COLUMNS, timeout=self._command_timeout
                )
        except asyncpg.UniqueViolationError:
            return None
        # Keyed by the stored (NUL-free) source, as the careful way's RETURNING reports it.
        return dict(Counter(row[1] for row in rows))

    async def _copy_careful(self, pool: asyncpg.Pool, rows: list[PostgresRow]) -> dict[str, int]:
        inserted = dict.fromkeys((row[1] for row in rows), 0)
        async with pool.acquire(timeout=self._connect_timeout) as conn, conn.transaction():
            await conn.copy_records_to_table(
                POSTGRES_STAGING, records=rows, columns=COLUMNS, timeout=self._command_timeout
            )
            counts = await conn.fetch(POSTGRES_INSERT)
        for source, count in counts:
            inserted[source] = count
        return inserted

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                pool = await self._ensure_pool()
                return bool(await pool.fetchval("SELECT 1") == 1)
        except _PING_FAILURES:
            return False

    async def count(self) -> int:
        pool = await self._ensure_pool()
        try:
            return int(await pool.fetchval(COUNT))
        except _UNAVAILABLE as exc:
            raise SinkUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement (`eventpipe events`)."""
        pool = await self._ensure_pool()
        try:
            return [tuple(row) for row in await pool.fetch(sql, *params)]
        except _UNAVAILABLE as exc:
            raise SinkUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                try:
                    if self.create:
                        await self._migrate()
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        command_timeout=self._command_timeout,
                        timeout=self._connect_timeout,
                        # Readers need no staging table, and may be on a read-only standby.
                        init=_init_connection if self.create else None,
                    )
                except _UNAVAILABLE as exc:
                    raise SinkUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc
            return self._pool

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=self._connect_timeout, command_timeout=self._command_timeout
        )
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                found = await conn.fetchrow(
                    "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                    TABLE,
                    f"{TABLE}_received_at_idx",
                )
                table_missing = found is None or not found[0]
                if table_missing or found is None or not found[1]:
                    for statement in POSTGRES_DDL:
                        await conn.execute(statement)
                self.created_table = self.created_table or table_missing
        finally:
            await conn.close(timeout=self._connect_timeout)
