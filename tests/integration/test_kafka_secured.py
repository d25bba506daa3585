"""Every Kafka client of eventpipe against a broker with secured listeners only (tests/secure_kafka.py):
SASL_SSL with SCRAM-SHA-512 and with PLAIN, TLS with a custom CA, client certificates (mTLS). A 2xx is
a record durable through SASL_SSL, a consumer stores it, and status, replay, import and topics work
through it; a wrong password or an untrusted certificate gives a clear error, a process that stays up
not ready, and never the password in a log."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline import topics
from pipeline.kafka_security import kafka_client_options
from pipeline.metrics import Metrics
from pipeline.record import RecordMeta
from pipeline.settings import Settings
from producers.receiver.kafka import RecordProducer
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret, load_cases, restamp
from tests.faults.services import unavailable
from tests.integration.conftest import query
from tests.kafka_util import unique_settings
from tests.processes import environment, post_case, running_consumer, running_receiver
from tests.secure_kafka import SecureBroker
from tests.waiting import wait_for, wait_until

pytestmark = pytest.mark.kafka

DFINERY = next(c for c in load_cases() if c.id == "dfinery-seed-purchase")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if shutil.which("openssl") is None:
        unavailable("openssl is needed for the test CA (make test installs it)")
    secured = SecureBroker(tmp_path_factory.mktemp("secure-kafka"))
    try:
        secured.start()
        yield secured
    finally:
        secured.close()


def eventpipe(settings: Settings, broker: SecureBroker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **environment(settings),
        **broker.environment(),
        "EVENTPIPE_TENANTS": str(CORPUS / "tenants.toml"),
        JWT_SECRET_ENV: jwt_secret(),
    }
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def raw_values(settings: Settings) -> list[bytes]:
    """Every record of the raw topic, read through the secured listener with a client of our own."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(settings.raw_topic, p) for p in range(settings.raw_partitions)]
        consumer.assign(parts)
        expected = sum((await consumer.end_offsets(parts)).values())
        await consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        await consumer.stop()


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("mode", ["scram-sha-512", "plain", "mtls"])
async def test_each_mechanism_creates_topics_writes_and_reads(broker: SecureBroker, mode: str) -> None:
    base = unique_settings(broker.sasl_ssl)
    settings = {
        "scram-sha-512": broker.scram_settings,
        "plain": broker.plain_settings,
        "mtls": broker.mtls_settings,
    }[mode](base)
    await topics.ensure(settings)
    producer = RecordProducer(settings, Metrics(CollectorRegistry()))
    await producer.start()
    try:
        await wait_for(lambda: producer.ready, 30, f"the receiver's producer to connect over {mode}")
        meta = RecordMeta("dfinery", "events", "shop-a", 1, f"req-{mode}")
        await producer.send(f"record over {mode}".encode(), meta)
    finally:
        await producer.stop()
    assert await raw_values(settings) == [f"record over {mode}".encode()]


def test_receiver_consumer_status_replay_import_through_sasl_ssl(
    broker: SecureBroker, tmp_path: Path
) -> None:
    settings = broker.scram_settings(unique_settings("-", sink=f"sqlite:///{tmp_path / 'events.db'}"))
    case = restamp(DFINERY, datetime.now(UTC))
    assert isinstance(case.body_json, dict)
    event_id = case.body_json["event_attributes"]["event_id"]
    env = broker.environment()

    async def post(url: str) -> int:
        async with aiohttp.ClientSession() as session:
            return (await post_case(session, url, case)).status

    async def stored() -> bool:
        try:
            rows = await query(settings.sink, "SELECT count(*) FROM events WHERE event_id = $1", event_id)
        except Exception:  # the table appears with the consumer's first start
            return False
        return rows == [(1,)]

    with running_receiver(settings, tmp_path, env=env) as receiver:
        assert asyncio.run(post(receiver.url)) == 200, receiver.log_text()
        # durable: the record is on the topic, read back through SASL_SSL by another client
        assert asyncio.run(raw_values(settings)) == [case.body]
        with running_consumer(settings, tmp_path, env=env) as consumer:
            asyncio.run(wait_for(stored, 60, consumer.log_text))
    status = eventpipe(settings, broker, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["broker"]["reachable"] is True
    replay_group = f"{settings.consumer_group}-again"
    replayed = eventpipe(settings, broker, "replay", "--from", "earliest", "--group", replay_group)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    lines = tmp_path / "import.jsonl"
    other = restamp(DFINERY, datetime.now(UTC)).body.replace(event_id.encode(), str(uuid.uuid4()).encode())
    lines.write_bytes(other + b"\n")
    imported = eventpipe(settings, broker, "import", str(lines), "--source", "dfinery", "--tenant", "shop-a")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert len(asyncio.run(raw_values(settings))) == 2
    everything = [receiver.log_text(), consumer.log_text()]
    everything += [r.stdout + r.stderr for r in (status, replayed, imported)]
    assert not [text for text in everything if broker.scram_password in text]


def test_wrong_password_is_a_clear_error_and_not_ready_without_exiting(
    broker: SecureBroker, tmp_path: Path
) -> None:
    good = broker.scram_settings(unique_settings("-", sink=f"sqlite:///{tmp_path / 'events.db'}"))
    asyncio.run(topics.ensure(good))
    wrong = {"TEST_KAFKA_SCRAM_PW": "not-the-password-" + broker.scram_password[:4]}
    clear = "SASL authentication failed for user 'eventpipe-scram' with SCRAM-SHA-512"
    with (
        running_receiver(good, tmp_path, env=wrong, ready=False) as receiver,
        running_consumer(good, tmp_path, env=wrong, ready=False) as consumer,
    ):
        # Two failed attempts each: it retries in the same process rather than exiting.
        wait_until(lambda: receiver.log_text().count(clear) >= 2, 60, receiver.log_text)
        wait_until(lambda: consumer.log_text().count(clear) >= 2, 60, consumer.log_text)
        assert receiver.alive() and consumer.alive()
        assert get_status(f"{receiver.url}/readyz") == 503
        assert get_status(f"http://127.0.0.1:{consumer.port}/readyz") == 503
        assert get_status(f"http://127.0.0.1:{consumer.port}/healthz") == 200
        for log in (receiver.log_text(), consumer.log_text()):
            assert wrong["TEST_KAFKA_SCRAM_PW"] not in log and broker.scram_password not in log
    status = subprocess.run(
        [sys.executable, "-m", "eventpipe", "status"],
        env={**os.environ, **environment(good), **wrong},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 1 and clear in status.stdout, status.stdout + status.stderr


@pytest.mark.parametrize(
    ("mode", "clear"),
    [
        pytest.param("untrusted-ca", "the broker's TLS certificate was rejected (unable to get local issuer certificate)", id="untrusted-ca"),
        pytest.param("no-client-certificate", "the broker hung up during the handshake; the listener may want a client certificate", id="mtls-without-certificate"),
    ],
)  # fmt: skip
def test_refused_tls_is_a_clear_error(broker: SecureBroker, mode: str, clear: str) -> None:
    base = unique_settings("-")
    if mode == "untrusted-ca":
        settings = broker.scram_settings(base).replace(kafka_ssl_cafile=str(broker.certs.other_ca))
    else:
        settings = broker.mtls_settings(base).replace(kafka_ssl_certfile="", kafka_ssl_keyfile="")
    ensured = eventpipe(settings, broker, "topics", "ensure")
    assert ensured.returncode == 1
    assert clear in ensured.stderr, ensured.stderr
    assert "Traceback" not in ensured.stderr
