"""A private single-node broker with secured listeners, for the tests of Kafka security: SASL_SSL
(SCRAM-SHA-512 users created by Kafka's own StorageTool at format time, and PLAIN users from the
JAAS config), SSL requiring a client certificate (mTLS), a plaintext listener for nothing but the
broker's own use and our readiness poll. Certificates come from a throw-away CA made with openssl."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline import kafka_local
from pipeline.kafka_local import Layout
from pipeline.secrets import Secret
from pipeline.settings import Settings
from tests.ports import free_port_run
from tests.waiting import wait_until

SCRAM_USER = "eventpipe-scram"
PLAIN_USER = "eventpipe-plain"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


@dataclass(frozen=True)
class Certificates:
    root: Path  # also holds server.key and server.pem apart (what PostgreSQL takes)
    ca: Path  # the CA that signed the broker's and the client's certificates
    server: Path  # the broker's key and certificate chain, one PEM (Kafka's PEM keystore)
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting it alone must refuse the broker

    @classmethod
    def make(cls, root: Path) -> Certificates:
        root.mkdir(parents=True, exist_ok=True)
        for name in ("ca", "other-ca"):
            _openssl(
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=eventpipe test {name}",
                "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.pem"),
            )  # fmt: skip
        for name, extension in (
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "extendedKeyUsage=clientAuth"),
        ):
            key, csr, cert = (root / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=eventpipe {name}",
                     "-keyout", str(key), "-out", str(csr))  # fmt: skip
            (root / f"{name}.ext").write_text(extension + "\n")
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(root / "ca.pem"), "-CAkey", str(root / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(root / f"{name}.ext"), "-out", str(cert),
            )  # fmt: skip
        # Kafka's PEM keystore: an unencrypted PKCS#8 key, then the certificate chain.
        _openssl(
            "pkcs8", "-topk8", "-nocrypt", "-in", str(root / "server.key"), "-out", str(root / "server.p8")
        )
        chain = root / "server-chain.pem"
        chain.write_text((root / "server.p8").read_text() + (root / "server.pem").read_text())
        return cls(
            root, root / "ca.pem", chain, root / "client.pem", root / "client.key", root / "other-ca.pem"
        )


class SecureBroker:
    """Ports: SASL_SSL on p, the controller on p+1, SSL with client certificates on p+2, the broker's
    own plaintext listener on p+3."""

    def __init__(self, root: Path, heap: str = "256m") -> None:
        self.port = free_port_run(3)
        self.certs = Certificates.make(root / "tls")
        self.scram_password = secrets.token_urlsafe(18)
        self.plain_password = secrets.token_urlsafe(18)
        self._heap = heap
        base = Settings(kafka_bootstrap=f"127.0.0.1:{self.port}", data_dir=str(root), kafka_heap=heap)
        self._settings = base
        self._layout = Layout.from_settings(base)

    @property
    def sasl_ssl(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.port + 2}"

    @property
    def internal(self) -> str:
        return f"127.0.0.1:{self.port + 3}"

    def environment(self) -> dict[str, str]:
        """The variables the passwords are read from (settings name them as env:...)."""
        return {"TEST_KAFKA_SCRAM_PW": self.scram_password, "TEST_KAFKA_PLAIN_PW": self.plain_password}

    def scram_settings(self, base: Settings, password: str | None = None) -> Settings:
        return base.replace(
            kafka_bootstrap=self.sasl_ssl,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=SCRAM_USER,
            kafka_sasl_password=Secret("env:TEST_KAFKA_SCRAM_PW", password or self.scram_password),
            kafka_ssl_cafile=str(self.certs.ca),
        )

    def plain_settings(self, base: Settings) -> Settings:
        return base.replace(
            kafka_bootstrap=self.sasl_ssl,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username=PLAIN_USER,
            kafka_sasl_password=Secret("env:TEST_KAFKA_PLAIN_PW", self.plain_password),
            kafka_ssl_cafile=str(self.certs.ca),
        )

    def mtls_settings(self, base: Settings) -> Settings:
        return base.replace(
            kafka_bootstrap=self.mtls,
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(self.certs.ca),
            kafka_ssl_certfile=str(self.certs.client_cert),
            kafka_ssl_keyfile=str(self.certs.client_key),
        )

    def _overrides(self) -> dict[str, str]:
        p, certs = self.port, self.certs
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{PLAIN_USER}="{self.plain_password}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{p},CONTROLLER://127.0.0.1:{p + 1},"
            f"SSL://127.0.0.1:{p + 2},INTERNAL://127.0.0.1:{p + 3}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{p},SSL://127.0.0.1:{p + 2},INTERNAL://127.0.0.1:{p + 3}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,INTERNAL:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(certs.server),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(certs.ca),
            "listener.name.ssl.ssl.client.auth": "required",
        }

    def start(self) -> None:
        layout = self._layout
        kafka_local.fetch_jars(layout)
        kafka_local.render_config(layout, self._overrides())
        scram_user = f"SCRAM-SHA-512=[name={SCRAM_USER},password={self.scram_password}]"
        kafka_local.format_storage(layout, self._heap, extra_args=("--add-scram", scram_user))
        proc = kafka_local.launch(layout, self._heap)

        def up() -> bool:
            assert proc.poll() is None, kafka_local.tail(layout.log_file)
            return kafka_local.client_connects(self.internal, timeout=2.0)

        wait_until(up, 90, lambda: kafka_local.tail(layout.log_file))

    def close(self) -> None:
        pid = kafka_local.read_pid(self._layout)
        if pid is None:
            return
        try:
            kafka_local.stop(self._settings)
        except kafka_local.KafkaLocalError:
            os.kill(pid, signal.SIGKILL)
