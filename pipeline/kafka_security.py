"""How every Kafka client of eventpipe connects: bootstrap servers plus the security settings (TLS with a
custom CA and client certificates, SASL PLAIN or SCRAM), as keyword arguments for aiokafka's producer,
consumer and admin client. One function, so that no client can be built without them."""

from __future__ import annotations

from pathlib import Path
from ssl import SSLContext
from typing import Any

from aiokafka.helpers import create_ssl_context

from pipeline.settings import Settings


def ssl_context(settings: Settings) -> SSLContext:
    """Verifies the brokers' certificates and host names against the CA file, or the system's CAs
    (what managed services' public certificates need)."""
    s = settings
    context: SSLContext = create_ssl_context(
        cafile=_path(s.kafka_ssl_cafile),
        certfile=_path(s.kafka_ssl_certfile),
        keyfile=_path(s.kafka_ssl_keyfile),
    )
    return context


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """`bootstrap_servers` and the security keywords shared by AIOKafkaProducer, AIOKafkaConsumer and
    AIOKafkaAdminClient."""
    s = settings
    options: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap,
        "security_protocol": s.kafka_security_protocol,
    }
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(s)
    if s.kafka_security_protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None  # settings refuse SASL without one
        options["sasl_mechanism"] = s.kafka_sasl_mechanism
        options["sasl_plain_username"] = s.kafka_sasl_username
        options["sasl_plain_password"] = s.kafka_sasl_password.value
    return options


def _path(value: str) -> str | None:
    return str(Path(value).expanduser()) if value else None
