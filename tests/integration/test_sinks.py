"""One suite for both sinks against real databases (SQLite files in tmp_path, the real PostgreSQL server),
plus each sink's own failure modes: read-only and full disks, locks, concurrent processes, killed
backends and a server that goes away and comes back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from consumers.migrate import migrate
from consumers.sinks import PostgresSink, SqliteSink, open_sink
from consumers.sinks.base import Sink
from consumers.sinks.postgres import CAREFUL_BATCHES_AFTER_CONFLICT
from pipeline.canonical import COLUMNS, CanonicalEvent
from pipeline.errors import SinkUnavailable, UnstorableEvent
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
KST = timezone(timedelta(hours=9))
STORED = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
T = TypeVar("T")


def make_event(n: int, *, source: str = "topsort", **fields: Any) -> CanonicalEvent:
    values: dict[str, Any] = {
        "tenant": "demo",
        "source": source,
        "event_type": "impression",
        "event_id": f"ev-{n}",
        "occurred_at": datetime(2024, 5, 1, 10, 0, tzinfo=KST) + timedelta(microseconds=n),
        "received_at": datetime(2024, 5, 1, 1, 0, 5, tzinfo=UTC),
        "raw": b'{"id": "ev-%d", "entity": {"type": "product", "id": "p-%d"}}' % (n, n),
        "product_id": f"p-{n}",
    }
    values.update(fields)
    return CanonicalEvent(**values)


def batch(first: int, count: int, **fields: Any) -> list[CanonicalEvent]:
    return [make_event(n, **fields) for n in range(first, first + count)]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # Outside the test's event loop: a session fixture must not disturb the loop pytest-asyncio owns.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_test_dsn(postgres_dsn: str) -> Iterator[str]:
    """A database of our own for this session, dropped at the end: tests never touch anyone's tables."""
    name = f"eventpipe_test_{os.getpid()}_{secrets.token_hex(4)}"
    _run(_admin(postgres_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_dsn, name)
    finally:
        _run(_admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Backend:
    """A sink URL plus an independent way to read back what really is in the database."""

    kind: str
    url: str

    def sink(self) -> Sink:
        return open_sink(self.url)

    async def rows(self) -> dict[str, dict[str, Any]]:
        """Every row by event_id, values decoded to Python (times, Decimals, JSON with exact numbers),
        plus `text:<column>` with the database's own text where that matters."""
        if self.kind == "sqlite":
            return _sqlite_rows(self.url.removeprefix("sqlite:///"))
        conn = await asyncpg.connect(self.url)
        try:
            records = await conn.fetch("SELECT *, price::text AS price_text FROM events")
        finally:
            await conn.close()
        rows = {}
        for record in records:
            row = {c: record[c] for c in COLUMNS}
            row["text:price"] = record["price_text"]
            for column in ("placement", "items", "attributes"):
                row[column] = _json(row[column])
            row["raw"] = row["raw"].encode()
            rows[row["event_id"]] = row
        return rows


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text, parse_float=Decimal)


def _sqlite_rows(path: str) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(path)
    try:
        db.row_factory = sqlite3.Row
        records = db.execute("SELECT * FROM events").fetchall()
    finally:
        db.close()
    rows = {}
    for record in records:
        row = {c: record[c] for c in COLUMNS}
        for column in ("occurred_at", "received_at", "stored_at"):
            row[f"text:{column}"] = row[column]
            row[column] = datetime.fromisoformat(row[column])
        row["text:price"] = row["price"]
        row["price"] = None if row["price"] is None else Decimal(row["price"])
        for column in ("product_ids", "placement", "items", "attributes"):
            row[column] = _json(row[column])
        row["raw"] = row["raw"].encode()
        rows[row["event_id"]] = row
    return rows


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path}/data/events.db")
    dsn: str = request.getfixturevalue("pg_test_dsn")
    await _admin(dsn, "DROP TABLE IF EXISTS events")
    return Backend("postgresql", dsn)


@contextlib.asynccontextmanager
async def started(sink: Sink) -> AsyncIterator[Sink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


# --- the suite both sinks pass -------------------------------------------------------------------


async def test_migrate_twice_is_harmless(backend: Backend) -> None:
    first = await migrate(backend.url)
    second = await migrate(backend.url)
    assert first.startswith("created table events")
    assert second.startswith("table events already present") and "(0 rows)" in second
    async with started(backend.sink()) as sink:
        await sink.write(batch(0, 3), STORED)
    assert "(3 rows)" in await migrate(backend.url)
    assert sorted(await backend.rows()) == ["ev-0", "ev-1", "ev-2"]


async def test_write_then_count(backend: Backend) -> None:
    events = batch(0, 250)
    async with started(backend.sink()) as sink:
        assert await sink.ping()
        result = await sink.write(events, STORED)
        assert result.inserted_by_source == {"topsort": 250}
        assert await sink.count() == 250
    rows = await backend.rows()
    assert len(rows) == 250
    assert rows["ev-7"]["product_id"] == "p-7"
    assert rows["ev-7"]["stored_at"] == STORED


async def test_every_column_round_trips(backend: Backend) -> None:
    source = make_event(
        1,
        source="dfinery",
        event_type="purchase",
        user_id="user-1",
        anonymous_id="cookie-1",
        product_ids=["p-1", "p-2"],
        category_id="cat-1",
        vendor_id="vendor-1",
        order_id="order-1",
        quantity=2,
        price=Decimal("1321.43"),
        currency="KRW",
        search_query="운동화",
        placement={"path": "/search", "position": 3},
        items=[{"productId": "p-1", "unitPrice": Decimal("0.10"), "quantity": 1}],
        attributes={"abx:item_count": 2, "c:coupon": "SPRING", "c:rate": Decimal("4000011.0")},
    )
    async with started(backend.sink()) as sink:
        await sink.write([source], STORED)
    row = (await backend.rows())["ev-1"]
    expected = {c: getattr(source, c) for c in COLUMNS if c != "stored_at"}
    assert {c: row[c] for c in expected} == expected
    assert str(row["items"][0]["unitPrice"]) == "0.10"
    assert str(row["attributes"]["c:rate"]) == "4000011.0"


async def test_same_batch_twice_inserts_nothing_the_second_time(backend: Backend) -> None:
    events = batch(0, 3) + batch(100, 2, source="retailrocket")
    async with started(backend.sink()) as sink:
        first = await sink.write(events, STORED)
        second = await sink.write(events, STORED + timedelta(minutes=1))
        assert first.inserted_by_source == {"topsort": 3, "retailrocket": 2}
        assert second.inserted_by_source == {"topsort": 0, "retailrocket": 0}
        assert second.inserted == 0
        assert await sink.count() == 5
    rows = await backend.rows()
    assert len(rows) == 5
    assert {r["stored_at"] for r in rows.values()} == {STORED}  # skipped, never updated


async def test_duplicate_inside_one_batch(backend: Backend) -> None:
    original = make_event(1, price=Decimal("1.00"))
    retry = make_event(1, price=Decimal("2.00"))
    async with started(backend.sink()) as sink:
        result = await sink.write([original, make_event(2), retry], STORED)
        assert result.inserted_by_source == {"topsort": 2}
        later = await sink.write([make_event(1, price=Decimal("3.00"))], STORED)
        assert later.inserted == 0
    rows = await backend.rows()
    assert sorted(rows) == ["ev-1", "ev-2"]
    assert rows["ev-1"]["price"] in (Decimal("1.00"), Decimal("2.00"))


async def test_same_event_id_under_another_key_is_another_row(backend: Backend) -> None:
    variants = [
        make_event(1),
        make_event(1, tenant="other"),
        make_event(1, source="dfinery"),
        make_event(1, event_type="click"),
    ]
    async with started(backend.sink()) as sink:
        assert (await sink.write(variants, STORED)).inserted == 4
        assert await sink.count() == 4


@pytest.mark.parametrize(
    "price",
    ["1321.43", "0.10", "4000011.0", "0.01", "2399", "99999999999999999999.99", "0.000001", "-12.50"],
)
async def test_exact_price_round_trip(backend: Backend, price: str) -> None:
    async with started(backend.sink()) as sink:
        await sink.write([make_event(1, price=Decimal(price))], STORED)
    row = (await backend.rows())["ev-1"]
    assert row["price"] == Decimal(price)
    assert row["text:price"] == price  # the scale too: "0.10" stays "0.10"


async def test_times_read_back_equal_in_utc(backend: Backend) -> None:
    occurred = [
        datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=KST),
        datetime(2024, 4, 30, 19, 30, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2024, 5, 1, 1, 0, tzinfo=UTC),
    ]
    received = datetime(2024, 5, 1, 10, 0, 5, tzinfo=KST)
    events = [make_event(n, occurred_at=t, received_at=received) for n, t in enumerate(occurred)]
    async with started(backend.sink()) as sink:
        await sink.write(events, STORED.astimezone(KST))
    rows = await backend.rows()
    for n, t in enumerate(occurred):
        row = rows[f"ev-{n}"]
        assert row["occurred_at"] == t
        assert row["received_at"] == received
        assert row["stored_at"] == STORED
        for column in ("occurred_at", "received_at", "stored_at"):
            assert row[column].utcoffset() == timedelta(0)
        if backend.kind == "sqlite":
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", row["text:occurred_at"])
    if backend.kind == "sqlite":
        assert rows["ev-0"]["text:occurred_at"] == "2024-05-01T01:00:00.123456+00:00"
        assert rows["ev-1"]["text:occurred_at"] == "2024-05-01T01:00:00.000001+00:00"


async def test_raw_json_reads_back_byte_identical(backend: Backend) -> None:
    raws = [
        b'{"id":"ev-0","b":1,"a":2}',
        b'{ "id" : "ev-1",\n  "unitPrice" : 1321.430, "tags": [ ] }',
        '{"id": "ev-2", "q": "운동화 \\u00e9\\/", "n": 1e2}'.encode(),
        b'{"id": "ev-3", "nul": "\\u0000", "big": 12345678901234567890}',
    ]
    events = [make_event(n, raw=raw) for n, raw in enumerate(raws)]
    async with started(backend.sink()) as sink:
        await sink.write(events, STORED)
    rows = await backend.rows()
    assert [rows[f"ev-{n}"]["raw"] for n in range(len(raws))] == raws


async def test_nul_characters_do_not_poison_the_batch(backend: Backend) -> None:
    hostile = make_event(
        1,
        user_id="user\x00",
        product_ids=["p\x00", "q"],
        search_query="\x00",
        attributes={"c:note\x00": "a\x00b", "nested": {"v": ["\x00"]}},
        placement={"path": "\\u0000 is text"},
        raw=b'{"id": "ev-1", "note": "a\\u0000b"}',
    )
    events = [make_event(0), hostile, make_event(2)]
    async with started(backend.sink()) as sink:
        assert (await sink.write(events, STORED)).inserted == 3
    row = (await backend.rows())["ev-1"]
    nul = "\ufffd" if backend.kind == "postgresql" else "\x00"  # PostgreSQL cannot hold U+0000
    assert row["user_id"] == f"user{nul}"
    assert row["product_ids"] == [f"p{nul}", "q"]
    assert row["search_query"] == nul
    assert row["attributes"] == {f"c:note{nul}": f"a{nul}b", "nested": {"v": [nul]}}
    assert row["placement"] == {"path": "\\u0000 is text"}
    assert row["raw"] == hostile.raw


async def test_unstorable_event_stores_nothing_of_its_batch(backend: Backend) -> None:
    good = batch(0, 3)
    bad = make_event(9, quantity=2**70)  # beyond every 64-bit integer column
    async with started(backend.sink()) as sink:
        with pytest.raises(UnstorableEvent):
            await sink.write([*good, bad], STORED)
        assert await sink.count() == 0
        assert (await sink.write(good, STORED)).inserted == 3  # the same sink carries on
    assert sorted(await backend.rows()) == ["ev-0", "ev-1", "ev-2"]


async def test_empty_batch(backend: Backend) -> None:
    async with started(backend.sink()) as sink:
        result = await sink.write([], STORED)
        assert result.inserted_by_source == {}
        assert await sink.count() == 0


async def test_large_batch(backend: Backend) -> None:
    sources = ("topsort", "retailrocket", "dfinery", "impression")
    events = [
        make_event(n, source=sources[n % 4], price=Decimal(f"{n}.{n % 100:02d}")) for n in range(20_000)
    ]
    async with started(backend.sink()) as sink:
        result = await sink.write(events, STORED)
        assert result.inserted_by_source == dict.fromkeys(sources, 5_000)
        assert await sink.count() == 20_000
    rows = await backend.rows()
    assert rows["ev-19999"]["price"] == Decimal("19999.99")


# --- SQLite: several processes, read-only and full disks, locks ---------------------------------

WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from consumers.sinks.sqlite import SqliteSink
from pipeline.canonical import CanonicalEvent

async def main(path, first, count, size):
    sink = SqliteSink(path)
    await sink.start()
    inserted = 0
    for start in range(first, first + count, size):
        events = [
            CanonicalEvent(tenant="demo", source="topsort", event_type="click", event_id=f"ev-{n}",
                           occurred_at=datetime.now(UTC), received_at=datetime.now(UTC),
                           raw=b'{"id": "ev-%d"}' % n)
            for n in range(start, min(start + size, first + count))
        ]
        inserted += (await sink.write(events, datetime.now(UTC))).inserted
    await sink.close()
    print(inserted)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


async def test_sqlite_three_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared" / "events.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Overlapping id ranges 0..3999, 2000..5999 and 4000..7999, in batches of 200, all three starting
    # on a file that does not exist yet (switching it to WAL together once made one of them fail).
    procs = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", WRITER, path, str(first), "4000", "200"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        for first in (0, 2000, 4000)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    inserted = [int(out) for out, _ in outputs]
    assert sum(inserted) == 8000  # every event stored once, by one of them
    rows = _sqlite_rows(path)
    assert sorted(rows) == sorted(f"ev-{n}" for n in range(8000))


async def test_sqlite_two_sinks_in_one_process_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    a, b = SqliteSink(url), SqliteSink(url)
    await asyncio.gather(a.start(), b.start())
    try:
        results = await asyncio.gather(
            *(sink.write(batch(n * 100, 150), STORED) for n in range(20) for sink in (a, b))
        )
    finally:
        await asyncio.gather(a.close(), b.close())
    assert sum(r.inserted for r in results) == 100 * 19 + 150
    assert len(_sqlite_rows(str(tmp_path / "events.db"))) == 2050


@contextlib.contextmanager
def unprivileged_dir() -> Iterator[Path]:
    """A fresh directory in which file permissions apply to us. Root ignores them, so as root we act
    as `nobody` (effective uid only, restored after) inside it."""
    base = Path(tempfile.mkdtemp(prefix="eventpipe-perm-"))
    as_root = os.geteuid() == 0
    if as_root:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no `nobody` user to drop to")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        os.setegid(nobody.pw_gid)
        os.seteuid(nobody.pw_uid)
    try:
        yield base
    finally:
        if as_root:
            os.seteuid(0)
            os.setegid(0)
        shutil.rmtree(base)


async def test_sqlite_read_only_file_then_writable_again() -> None:
    with unprivileged_dir() as base:
        path = base / "events.db"
        async with started(SqliteSink(str(path))) as sink:
            await sink.write(batch(0, 5), STORED)
        path.chmod(0o444)
        sink = SqliteSink(str(path))
        await sink.start()  # the table exists: a read-only file still opens
        try:
            with pytest.raises(SinkUnavailable, match="readonly"):
                await sink.write(batch(5, 5), STORED)
            assert await sink.count() == 5
            assert await sink.ping()
            # What an operator does: the -wal and -shm files a read-only opener left behind too.
            for name in ("events.db", "events.db-wal", "events.db-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (base / name).chmod(0o644)
            # The same sink: its read-only connection (reopened by count and ping) is replaced by itself.
            result = await sink.write(batch(5, 5), STORED)
            assert result.inserted == 5
        finally:
            await sink.close()
        assert sorted(_sqlite_rows(str(path))) == sorted(f"ev-{n}" for n in range(10))


async def test_sqlite_read_only_directory_then_writable_again() -> None:
    with unprivileged_dir() as base:
        data = base / "data"
        data.mkdir()
        data.chmod(0o555)
        fresh = SqliteSink(str(data / "events.db"))
        nested = SqliteSink(str(data / "missing" / "events.db"))
        with pytest.raises(SinkUnavailable, match="unable to open"):
            await fresh.start()
        with pytest.raises(SinkUnavailable, match="Permission denied"):
            await nested.start()
        with pytest.raises(SinkUnavailable):
            await fresh.write(batch(0, 3), STORED)
        assert not await fresh.ping()
        data.chmod(0o755)
        assert (await fresh.write(batch(0, 3), STORED)).inserted == 3
        assert (await nested.write(batch(0, 2), STORED)).inserted == 2
        await fresh.close()
        await nested.close()
        # An existing database in a directory that turns read-only: WAL needs to create its files.
        data.chmod(0o555)
        again = SqliteSink(str(data / "events.db"))
        with pytest.raises(SinkUnavailable):
            await again.write(batch(3, 3), STORED)
        data.chmod(0o755)
        assert (await again.write(batch(3, 3), STORED)).inserted == 3
        await again.close()
        assert sorted(_sqlite_rows(str(data / "events.db"))) == sorted(f"ev-{n}" for n in range(6))


def _big_batch(first: int, count: int) -> list[CanonicalEvent]:
    padding = "x" * 2000
    return [
        make_event(n, raw=b'{"id": "ev-%d", "pad": "%s"}' % (n, padding.encode()))
        for n in range(first, first + count)
    ]


def _largest_file(directory: Path) -> int:
    return max(f.stat().st_size for f in directory.iterdir())


def _fill(path: Path) -> None:
    """Write until the file system has no byte left."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        try:
            while f.write(chunk):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


async def test_sqlite_file_size_limit_then_room_again(tmp_path: Path) -> None:
    """A real write failure from the kernel (EFBIG under RLIMIT_FSIZE), without needing root."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # Python ignores it, so writes just fail
    path = tmp_path / "events.db"
    async with started(SqliteSink(str(path))) as sink:
        await sink.write(batch(0, 10), STORED)
        largest = _largest_file(tmp_path)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 64 * 1024, hard))
        try:
            with pytest.raises(SinkUnavailable, match=r"SQLITE_IOERR|SQLITE_FULL"):
                await sink.write(_big_batch(100, 1000), STORED)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert await sink.count() == 10  # the failed batch was rolled back whole
        assert (await sink.write(_big_batch(100, 1000), STORED)).inserted == 1000
    assert len(_sqlite_rows(str(path))) == 1010


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


async def test_sqlite_disk_full_then_space_again(tmp_path: Path) -> None:
    """A real ENOSPC on a 2 MiB tmpfs: SQLITE_FULL → SinkUnavailable, and writes resume once space
    is freed, on the same sink."""
    with small_filesystem(tmp_path / "small", "2m") as disk:
        path = disk / "events.db"
        async with started(SqliteSink(str(path))) as sink:
            await sink.write(batch(0, 10), STORED)
            filler = disk / "filler"
            _fill(filler)
            with pytest.raises(SinkUnavailable, match=r"SQLITE_FULL|SQLITE_IOERR"):
                await sink.write(_big_batch(100, 200), STORED)
            assert await sink.count() == 10
            filler.unlink()
            assert (await sink.write(_big_batch(100, 200), STORED)).inserted == 200
        assert len(_sqlite_rows(str(path))) == 210


async def test_sqlite_locked_beyond_busy_timeout_then_free(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    sink = SqliteSink(str(path), busy_timeout=0.2)
    await sink.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(SinkUnavailable, match="locked"):
            await sink.write(batch(0, 3), STORED)
        blocker.execute("ROLLBACK")
        assert (await sink.write(batch(0, 3), STORED)).inserted == 3
    finally:
        blocker.close()
        await sink.close()
    assert len(_sqlite_rows(str(path))) == 3


async def test_sqlite_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.db"
    async with started(SqliteSink(f"sqlite:///{path}")) as sink:
        await sink.write(batch(0, 1), STORED)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
    assert len(_sqlite_rows(str(path))) == 1


# --- PostgreSQL: killed backends, a server that goes away, values it refuses --------------------


async def _sink_backends(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


async def _terminate_sink_backends(dsn: str) -> set[int]:
    conn = await asyncpg.connect(dsn)
    try:
        pids = await conn.fetchval(
            "SELECT array_agg(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids or [])
        return set(pids or [])
    finally:
        await conn.close()


async def _gone(dsn: str, pids: set[int]) -> bool:
    return not pids & set(await _sink_backends(dsn))


@pytest.fixture
async def pg_backend(pg_test_dsn: str) -> Backend:
    await _admin(pg_test_dsn, "DROP TABLE IF EXISTS events")
    return Backend("postgresql", pg_test_dsn)


@pytest.mark.postgres
async def test_postgres_fresh_batches_go_straight_into_events(pg_backend: Backend) -> None:
    sink = PostgresSink(pg_backend.url)
    async with started(sink):
        first = await sink.write(batch(0, 5) + batch(100, 3, source="retailrocket"), STORED)
        second = await sink.write(batch(5, 5), STORED)
    assert first.inserted_by_source == {"topsort": 5, "retailrocket": 3}
    assert second.inserted_by_source == {"topsort": 5}
    assert (sink.direct_writes, sink.careful_writes) == (2, 0)
    assert len(await pg_backend.rows()) == 13


@pytest.mark.postgres
async def test_postgres_conflict_stores_the_new_rows_then_stays_careful_for_a_while(
    pg_backend: Backend,
) -> None:
    sink = PostgresSink(pg_backend.url)
    async with started(sink):
        await sink.write(batch(0, 4), STORED)
        # A redelivery overlapping what is stored: the direct COPY is refused, nothing half-written.
        overlap = await sink.write(batch(2, 4) + batch(100, 1, source="dfinery"), STORED + timedelta(1))
        assert overlap.inserted_by_source == {"topsort": 2, "dfinery": 1}
        assert (sink.direct_writes, sink.careful_writes) == (1, 1)
        for n in range(CAREFUL_BATCHES_AFTER_CONFLICT - 1):
            assert (await sink.write(batch(1000 + n, 1), STORED)).inserted == 1
        assert sink.careful_writes == CAREFUL_BATCHES_AFTER_CONFLICT
        await sink.write(batch(2000, 1), STORED)
        assert sink.direct_writes == 2  # tried again once the careful stretch is over
    rows = await pg_backend.rows()
    assert len(rows) == 6 + 1 + CAREFUL_BATCHES_AFTER_CONFLICT
    assert rows["ev-2"]["stored_at"] == STORED  # skipped, never updated


@pytest.mark.postgres
async def test_postgres_recovers_after_backends_are_terminated(pg_backend: Backend) -> None:
    sink = PostgresSink(pg_backend.url)
    await sink.start()
    try:
        await sink.write(batch(0, 10), STORED)
        killed = await _terminate_sink_backends(pg_backend.url)
        assert killed
        await wait_for(lambda: _gone(pg_backend.url, killed), 15.0, "the terminated backends to go")
        try:
            await sink.write(batch(10, 10), STORED)
        except SinkUnavailable:
            await sink.write(batch(10, 10), STORED)  # the worker's retry: the pool reconnected
        assert (await sink.write(batch(20, 10), STORED)).inserted == 10
        assert await sink.count() == 30
    finally:
        await sink.close()
    assert len(await pg_backend.rows()) == 30


@pytest.mark.postgres
async def test_postgres_backend_terminated_mid_write_is_all_or_nothing(pg_backend: Backend) -> None:
    sink = PostgresSink(pg_backend.url, max_size=1)
    await sink.start()
    try:
        writing = asyncio.create_task(sink.write(batch(0, 20_000), STORED))
        await wait_for(lambda: _sink_busy(pg_backend.url, writing), 15.0, "the sink to be mid-write")
        killed = await _terminate_sink_backends(pg_backend.url)
        try:
            succeeded = (await writing).inserted == 20_000
        except SinkUnavailable:
            succeeded = False
        stored = await _count(pg_backend.url)
        # One transaction: all or nothing. A failure reported while the COMMIT was in flight may still
        # have committed: that is why a retry must be harmless.
        assert stored in (0, 20_000)
        assert stored == 20_000 or not succeeded
        await wait_for(lambda: _gone(pg_backend.url, killed), 15.0, "the terminated backends to go")
        result = await sink.write(batch(0, 20_000), STORED)
        assert result.inserted == 20_000 - stored
        assert (await sink.write(batch(20_000, 5), STORED)).inserted == 5
    finally:
        await sink.close()
    assert len(await pg_backend.rows()) == 20_005


async def _sink_busy(dsn: str, writing: asyncio.Task[Any]) -> bool:
    if writing.done():
        return True
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
        )
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


class TcpProxy:
    """A loopback TCP relay to PostgreSQL that the test can cut and restore: the server "goes away"
    (connections reset, port refused) without touching the real server others use."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


@pytest.fixture
async def proxy(pg_test_dsn: str) -> AsyncIterator[TcpProxy]:
    target = urlsplit(pg_test_dsn)
    relay = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await relay.start()
    yield relay
    if relay._server is not None and relay._server.is_serving():
        await relay.stop()


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@pytest.mark.postgres
async def test_postgres_server_gone_then_back(pg_backend: Backend, proxy: TcpProxy) -> None:
    sink = PostgresSink(_via(pg_backend.url, proxy.port), connect_timeout=3.0)
    await sink.start()
    try:
        await sink.write(batch(0, 10), STORED)
        await proxy.stop()  # every connection reset, the port refuses
        with pytest.raises(SinkUnavailable):
            await sink.write(batch(10, 10), STORED)
        with pytest.raises(SinkUnavailable):
            await sink.write(batch(10, 10), STORED)
        assert not await sink.ping()
        await proxy.start()  # same port
        assert (await sink.write(batch(10, 10), STORED)).inserted == 10
        assert await sink.ping()
    finally:
        await sink.close()
    assert len(await pg_backend.rows()) == 20


@pytest.mark.postgres
async def test_postgres_unreachable_at_start(pg_backend: Backend, proxy: TcpProxy) -> None:
    await proxy.stop()
    sink = PostgresSink(_via(pg_backend.url, proxy.port), connect_timeout=3.0)
    with pytest.raises(SinkUnavailable):
        await sink.start()
    with pytest.raises(SinkUnavailable):
        await sink.write(batch(0, 1), STORED)
    await proxy.start()
    assert (await sink.write(batch(0, 1), STORED)).inserted == 1  # starts by itself on the next call
    await sink.close()
    assert len(await pg_backend.rows()) == 1


@pytest.mark.postgres
async def test_postgres_refuses_an_event_id_too_long_for_the_key(pg_backend: Backend) -> None:
    long_id = secrets.token_hex(5000)  # incompressible, beyond a btree entry's 2704 bytes
    async with started(PostgresSink(pg_backend.url)) as sink:
        with pytest.raises(UnstorableEvent, match="ProgramLimitExceeded"):
            await sink.write([make_event(0), make_event(1, event_id=long_id)], STORED)
        assert (await sink.write([make_event(0)], STORED)).inserted == 1
    assert sorted(await pg_backend.rows()) == ["ev-0"]


@pytest.mark.postgres
async def test_postgres_migrate_from_several_connections_at_once(pg_backend: Backend) -> None:
    results = await asyncio.gather(*(migrate(pg_backend.url) for _ in range(6)))
    assert sum(r.startswith("created") for r in results) == 1
    assert await _count(pg_backend.url) == 0
