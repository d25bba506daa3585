"""PostgreSQL over TLS through the sink's DSN alone (`sslmode=verify-full&sslrootcert=...`), against a
private server with a certificate from a throw-away CA: a consumer stores through it, the session is
encrypted, and a DSN trusting another CA is refused with a clear error."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from consumers.sinks import open_sink
from consumers.worker import Worker
from pipeline.errors import SinkUnavailable
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from producers.receiver.kafka import RecordProducer
from tests.corpus import load_cases, restamp
from tests.faults.services import PrivatePostgres, unavailable
from tests.kafka_util import create_topics, unique_settings
from tests.secure_kafka import Certificates
from tests.waiting import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

DFINERY = next(c for c in load_cases() if c.id == "dfinery-seed-purchase")


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[PrivatePostgres, Certificates]]:
    if shutil.which("openssl") is None:
        unavailable("openssl is needed for the test CA (make test installs it)")
    server = PrivatePostgres()
    try:
        certs = Certificates.make(server.root / "tls")
        # The server reads its key as its own user and refuses one that others may read.
        key = server.root / "server.key"
        shutil.copy(certs.root / "server.key", key)
        key.chmod(0o600)
        if os.geteuid() == 0:  # the server then runs as postgres (tests/faults/services.py)
            shutil.chown(key, user="postgres")
        server.init()
        server.start(f"-c ssl=on -c ssl_cert_file={certs.root / 'server.pem'} -c ssl_key_file={key}")
        yield server, certs
    finally:
        server.close()


def tls_dsn(server: PrivatePostgres, ca: Path) -> str:
    return f"{server.dsn}?sslmode=verify-full&sslrootcert={ca}"


async def test_consumer_stores_over_verified_tls(
    tls_postgres: tuple[PrivatePostgres, Certificates], kafka_bootstrap: str
) -> None:
    server, certs = tls_postgres
    dsn = tls_dsn(server, certs.ca)
    conn = await asyncpg.connect(dsn)
    try:
        encrypted = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    assert encrypted is True

    settings = unique_settings(kafka_bootstrap, sink=dsn, metrics_port=0, batch_max_wait_ms=50)
    await create_topics(settings)
    case = restamp(DFINERY, datetime.now(UTC))
    producer = RecordProducer(settings, Metrics(CollectorRegistry()))
    await producer.start()
    try:
        await wait_for(lambda: producer.ready, 30, "the producer to connect")
        meta = RecordMeta("dfinery", "events", "shop-a", int(datetime.now(UTC).timestamp() * 1000), "req-tls")
        await producer.send(case.body, meta)
    finally:
        await producer.stop()
    worker = Worker(settings, Metrics(CollectorRegistry()), open_sink(dsn))
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:

        async def stored() -> bool:
            conn = await asyncpg.connect(dsn)
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM events") == 1)
            finally:
                await conn.close()

        await wait_for(stored, 60, "the event to be stored over TLS")
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await worker.close()


async def test_untrusted_server_certificate_is_refused_clearly(
    tls_postgres: tuple[PrivatePostgres, Certificates],
) -> None:
    server, certs = tls_postgres
    sink = open_sink(tls_dsn(server, certs.other_ca))
    with pytest.raises(SinkUnavailable, match="certificate verify failed"):
        await sink.start()
    await sink.close()
