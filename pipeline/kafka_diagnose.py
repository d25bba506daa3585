"""Why a Kafka client cannot connect, in words an operator can act on. aiokafka reports a failed
bootstrap as "Unable to bootstrap from [...]" whatever the cause; this opens one connection per
bootstrap server with the same settings and names what went wrong (credentials, certificates, the
protocol) without ever showing the password."""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

from pipeline.kafka_security import kafka_client_options
from pipeline.settings import Settings


async def connection_problem(settings: Settings, wait_seconds: float = 5.0) -> str | None:
    """None when a bootstrap server accepts this client (TLS, SASL and an API versions request),
    else what each server's connection ran into."""
    options = kafka_client_options(settings)
    del options["bootstrap_servers"]
    problems = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(wait_seconds):
                conn = await create_conn(
                    host, int(port), request_timeout_ms=int(wait_seconds * 1000), **options
                )
        except Exception as exc:  # every failure is what we are here to explain
            problems.append(f"{server.strip()}: {describe(exc, settings, wait_seconds)}")
            continue
        conn.close()
        return None
    return "; ".join(problems)


def describe(exc: BaseException, settings: Settings, wait_seconds: float) -> str:
    s = settings
    protocol = s.kafka_security_protocol
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"SASL authentication failed for user {s.kafka_sasl_username!r} with {s.kafka_sasl_mechanism}: "
            "the user name or password is wrong (EVENTPIPE_KAFKA_SASL_USERNAME, EVENTPIPE_KAFKA_SASL_PASSWORD)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{exc} (EVENTPIPE_KAFKA_SASL_MECHANISM)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = s.kafka_ssl_cafile or "the system's CAs"
        return (
            f"the broker's TLS certificate was rejected ({exc.verify_message}), checked against {ca}: "
            "set EVENTPIPE_KAFKA_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        hint = (
            "the broker may require a client certificate (EVENTPIPE_KAFKA_SSL_CERTFILE, _KEYFILE)"
            if "certificate" in str(exc)
            else f"is this a TLS listener? (EVENTPIPE_KAFKA_SECURITY_PROTOCOL is {protocol})"
        )
        return f"TLS handshake failed ({exc.reason or exc}): {hint}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: no broker listens there"
    if isinstance(exc, TimeoutError):
        return (
            f"no answer within {wait_seconds:.0f}s (a client whose EVENTPIPE_KAFKA_SECURITY_PROTOCOL, "
            f"{protocol}, does not match the listener's waits like this)"
        )
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionError) or "closed" in text.lower():
        wants = (
            "a client certificate (EVENTPIPE_KAFKA_SSL_CERTFILE, _KEYFILE) or "
            if not s.kafka_ssl_certfile
            else ""
        )
        return (
            f"{text}: the broker hung up during the handshake; the listener may want {wants}another "
            f"EVENTPIPE_KAFKA_SECURITY_PROTOCOL than {protocol}"
        )
    return text
