"""Native TLS: `eventpipe receiver --tls-cert --tls-key` serves HTTPS (TLS 1.2 at least) with a
certificate made here by the openssl command; requests over it are accepted as over plain HTTP, and a
plain-HTTP client gets nothing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from pipeline.settings import Settings
from tests.corpus import load_cases
from tests.kafka_util import read_all, unique_settings
from tests.processes import EventpipeProcess, running_receiver

pytestmark = pytest.mark.kafka

CLICK = next(c for c in load_cases() if c.id == "topsort-spec-click")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed (.ci/run installs it)"
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Settings:
    return unique_settings(kafka_bootstrap)


@pytest.fixture(scope="module")
def tls_receiver(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    certificate: tuple[Path, Path],
    client_context: ssl.SSLContext,
) -> Iterator[EventpipeProcess]:
    cert, key = certificate
    with running_receiver(
        settings,
        tmp_path_factory.mktemp("tls-receiver"),
        args=("--tls-cert", str(cert), "--tls-key", str(key)),
        client_tls=client_context,
    ) as proc:
        yield proc


async def test_requests_over_https_are_accepted(
    tls_receiver: EventpipeProcess, client_context: ssl.SSLContext, settings: Settings
) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(
            f"{tls_receiver.url}{CLICK.path}", data=CLICK.body, headers=CLICK.headers, ssl=client_context
        ) as resp,
    ):
        assert resp.status == 204
    records = await read_all(settings.kafka_bootstrap, settings.raw_topic, expected=1)
    assert [r.value for r in records] == [CLICK.body]


def test_only_tls_1_2_or_later_and_no_plain_http(
    tls_receiver: EventpipeProcess, client_context: ssl.SSLContext
) -> None:
    with (
        socket.create_connection(("127.0.0.1", tls_receiver.port), timeout=30) as raw,
        client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{tls_receiver.port}/healthz", timeout=10)
    assert tls_receiver.alive()
