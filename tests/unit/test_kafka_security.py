"""Kafka security settings: the password only by reference and never shown, half configurations refused
at load, and the client keywords built from them. Pure (the CA file is a real self-signed PEM)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from pipeline import settings as settings_mod
from pipeline.errors import ConfigError
from pipeline.kafka_security import kafka_client_options

SASL = {
    "EVENTPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "EVENTPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "EVENTPIPE_KAFKA_SASL_USERNAME": "alice",
}
PASSWORD = "s3cret-not-to-be-seen"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
         "-keyout", str(root / "ca.key"), "-out", str(root / "ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return root / "ca.pem"


def test_password_from_env_is_resolved_and_never_shown() -> None:
    s = settings_mod.load({**SASL, "EVENTPIPE_KAFKA_SASL_PASSWORD": "env:KAFKA_PW", "KAFKA_PW": PASSWORD})
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.value == PASSWORD
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    assert "env:KAFKA_PW" in repr(s)
    assert PASSWORD not in settings_mod.describe()


def test_password_from_file_drops_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    s = settings_mod.load({**SASL, "EVENTPIPE_KAFKA_SASL_PASSWORD": f"file:{tmp_path / 'pw'}"})
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.value == PASSWORD
    assert PASSWORD not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({**SASL, "EVENTPIPE_KAFKA_SASL_PASSWORD": PASSWORD}, "never inline", id="inline-password"),
        pytest.param({**SASL, "EVENTPIPE_KAFKA_SASL_PASSWORD": "env:UNSET"}, "UNSET is not set", id="unset-env"),
        pytest.param({**SASL, "EVENTPIPE_KAFKA_SASL_PASSWORD": "file:/nonexistent/pw"}, "cannot read", id="no-file"),
        pytest.param(SASL, "needs kafka_sasl_username and kafka_sasl_password", id="no-password"),
        pytest.param(
            {**SASL, "EVENTPIPE_KAFKA_SASL_MECHANISM": "GSSAPI", "EVENTPIPE_KAFKA_SASL_PASSWORD": "env:X", "X": "x"},
            "needs kafka_sasl_mechanism", id="unsupported-mechanism",
        ),
        pytest.param({"EVENTPIPE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of", id="unknown-protocol"),
        pytest.param({"EVENTPIPE_KAFKA_SASL_USERNAME": "alice"}, "kafka_security_protocol is PLAINTEXT", id="sasl-on-plaintext"),
        pytest.param({"EVENTPIPE_KAFKA_SSL_CAFILE": "/etc/hostname"}, "kafka_security_protocol is PLAINTEXT", id="tls-on-plaintext"),
        pytest.param(
            {"EVENTPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "EVENTPIPE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "does not exist", id="missing-ca",
        ),
        pytest.param(
            {"EVENTPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "EVENTPIPE_KAFKA_SSL_KEYFILE": "/etc/hostname"},
            "needs kafka_ssl_certfile", id="key-without-cert",
        ),
    ],
)  # fmt: skip
def test_half_configurations_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        settings_mod.load(env)
    assert PASSWORD not in str(refused.value)


def test_plaintext_options_are_the_bootstrap_alone() -> None:
    options = kafka_client_options(settings_mod.load({"EVENTPIPE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}))
    assert options == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_carry_credentials_and_a_verifying_context(ca_file: Path) -> None:
    env = {
        **SASL,
        "EVENTPIPE_KAFKA_SASL_PASSWORD": "env:KAFKA_PW",
        "KAFKA_PW": PASSWORD,
        "EVENTPIPE_KAFKA_SSL_CAFILE": str(ca_file),
    }
    options = kafka_client_options(settings_mod.load(env))
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
