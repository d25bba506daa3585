"""The one settings object: read once in the entry point from `EVENTPIPE_*` variables and an optional
TOML file (`EVENTPIPE_CONFIG`), then passed down. Library code never reads the environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pipeline.errors import ConfigError
from pipeline.limit_check import check_limits
from pipeline.secrets import Secret, resolve

PREFIX = "EVENTPIPE_"

# Requests per second per tenant, by source, where no setting or tenant says otherwise. Retail Rocket's
# document: "50 requests/second per site" (per partnerId). Topsort states no limit for its events API;
# DFINERY documents the 429/4006 reply but no figure in the seed (its public pages give 1,000,000 or
# 10,000,000 per minute per token, beyond what a receiver takes); the Impression API names none.
DEFAULT_RATE_LIMITS: Mapping[str, float] = {"retailrocket": 50.0}

# Admission's default per receiver worker (docs/SCALING.md, "Overload").
MAX_IN_FLIGHT_BYTES = 2 * 1024 * 1024


def _setting(default: Any, help: str) -> Any:
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client"
    )
    kafka_sasl_mechanism: str = _setting("", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)")
    kafka_sasl_username: str = _setting("", "SASL user name")
    kafka_sasl_password: Secret | None = _setting(None, "SASL password as env:NAME or file:PATH")
    kafka_ssl_cafile: str = _setting("", "PEM CA bundle for the brokers' certificates (default: system)")
    kafka_ssl_certfile: str = _setting("", "PEM client certificate, for brokers that require one (mTLS)")
    kafka_ssl_keyfile: str = _setting("", "PEM private key of the client certificate")
    raw_topic: str = _setting("eventpipe.raw", "topic of raw accepted requests")
    dlq_topic: str = _setting("eventpipe.dlq", "dead-letter topic")
    raw_partitions: int = _setting(12, "partitions of the raw topic (bounds consumer parallelism)")
    topic_retention_hours: int = _setting(168, "retention of both topics; must outlast the window")
    topic_replication: int = _setting(1, "replication factor of new topics (3 on a real cluster)")
    consumer_group: str = _setting("eventpipe-sink", "consumer group of the sink workers")
    sink: str = _setting("sqlite:///./.eventpipe/events.db", "sqlite:///path.db or postgresql://...")
    tenants: str = _setting("", "path of the tenants TOML file")
    http_host: str = _setting("127.0.0.1", "receiver bind address")
    http_port: int = _setting(8080, "receiver port (also /metrics, /healthz, /readyz)")
    metrics_port: int = _setting(9400, "each consumer's /metrics, /healthz, /readyz port; 0 picks one")
    window_hours: float = _setting(48.0, "events older than this, against received_at, are late")
    future_skew_seconds: float = _setting(600.0, "events further ahead of received_at are future")
    window_hours_by_source: dict[str, float] = _setting(
        {}, "per-source window override, e.g. 'dfinery=48,topsort=72'"
    )
    max_body_bytes: int = _setting(1_048_576, "request body limit after decompression (413 above)")
    request_read_timeout_seconds: float = _setting(30.0, "a body not read within this answers 408")
    http_idle_timeout_seconds: float = _setting(
        75.0, "a connection with no request in progress (idle keep-alive, headers never finished) closes"
    )
    produce_timeout_seconds: float = _setting(5.0, "Kafka must acknowledge within this, else 503")
    # producers/receiver/transactions.py; the trade-off, measured: docs/SCALING.md, "Phantoms".
    kafka_transactional_id: str = _setting(
        "",
        "set: the receiver writes in Kafka transactions, so no record of a request answered 503 is ever "
        "stored (each request waits for a commit); worker N uses ID-N and ID-N-b, so ID must be unique per receiver",
    )
    # Admission (producers/receiver/admission.py): over the bound a request is refused with the vendor's
    # 503 and Retry-After before its body is read. Why this default, and why there is no bound on the
    # number of requests, measured: docs/SCALING.md, "Overload".
    max_in_flight_bytes: int = _setting(
        MAX_IN_FLIGHT_BYTES,
        "request body bytes one receiver worker holds at once, reserved from Content-Length before the "
        "body is read (chunked or compressed: the body limit); 0 = unlimited",
    )
    # While a worker refuses requests, connections with no admitted request are not read (valve.py).
    overload_wait_seconds: float = _setting(
        0.5,
        "while a receiver worker is at max_in_flight_bytes, how long a connection waits unread before "
        "its request is read (and refused with 503 unless there is room by then); 0 = read at once",
    )
    drain_seconds: float = _setting(10.0, "on SIGTERM, how long in-flight requests may finish")
    # The receiver closes its batches itself (one per partition per loop tick, or gathered while a
    # batch is in flight: producers/receiver/batching.py), so the linger delays none of them; it is
    # left for aiokafka's own send() path, and at 1 ms because every request awaits its record's
    # acknowledgement (docs/PERFORMANCE.md, "Where the defaults come from").
    producer_linger_ms: int = _setting(1, "producer batching delay (aiokafka's send path)")
    producer_compression: str = _setting("lz4", "none, gzip, snappy, lz4 or zstd")
    batch_max_records: int = _setting(2000, "consumer batch bound: Kafka records")
    batch_max_bytes: int = _setting(
        4 * 1024 * 1024, "consumer batch bound: record bytes (bounds events per transaction)"
    )
    # Part of every event's request-to-row latency; under load batches fill by size first. Why 25 ms,
    # measured: docs/PERFORMANCE.md, "Where the defaults come from".
    batch_max_wait_ms: int = _setting(25, "consumer batch bound: time (part of request-to-row latency)")
    dedup_cache_size: int = _setting(500_000, "recently seen event keys kept in memory per consumer")
    sink_retry_max_seconds: float = _setting(30.0, "cap of the backoff while the sink is down")
    rate_limits: dict[str, float] = _setting(
        {},
        "requests/s per tenant and source (Retail Rocket: per partnerId), over the built-in "
        "retailrocket=50; 0 = unlimited; tenants may override, e.g. 'dfinery=200'",
    )
    rate_limit_bursts: dict[str, float] = _setting(
        {}, "requests a tenant may send at once per source, e.g. 'dfinery=400' (default: one second's worth)"
    )
    tenant_labels: bool = _setting(False, "allow tenant ids as metric labels")
    log_format: str = _setting("auto", "auto (console on a terminal, else json), json or console")
    log_level: str = _setting("info", "debug, info, warning or error")
    data_dir: str = _setting("./.eventpipe", "where local state lives (Kafka data, pid files, SQLite)")
    kafka_home: str = _setting("", "where the broker jars are cached (default ~/.cache/eventpipe)")
    kafka_heap: str = _setting("512m", "local broker's maximum heap")

    def window_for(self, source: str) -> float:
        return self.window_hours_by_source.get(source, self.window_hours)

    def rate_for(self, source: str) -> float:
        """Requests/s per tenant for a source; 0 means unlimited."""
        return self.rate_limits.get(source, DEFAULT_RATE_LIMITS.get(source, 0.0))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def describe() -> str:
    """Every setting with its variable, default and meaning, for --help."""
    lines = ["settings (environment, or lower-case keys in the TOML file named by EVENTPIPE_CONFIG):"]
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        lines.append(f"  {PREFIX}{f.name.upper():<30} {f.metadata['help']} [default: {default}]")
    return "\n".join(lines)


def load(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Settings from a TOML file (if EVENTPIPE_CONFIG names one), then the environment, then overrides
    (command-line flags), each later source winning."""
    values: dict[str, Any] = {}
    config_path = environ.get(PREFIX + "CONFIG")
    if config_path:
        try:
            values.update(tomllib.loads(Path(config_path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_path}: {exc}") from exc
    for f in dataclasses.fields(Settings):
        raw = environ.get(PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _build(values, environ)


def _build(values: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    hints = get_type_hints(Settings)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    kwargs = {name: _coerce(name, hints[name], value, environ) for name, value in values.items()}
    settings = Settings(**kwargs)
    _check(settings)
    return settings


def _coerce(name: str, hint: Any, value: Any, environ: Mapping[str, str]) -> Any:
    if hint == Secret | None:
        return value if isinstance(value, Secret) else resolve(name, str(value), environ)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in value.items()}
        pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
        return {k.strip(): float(v) for k, v in pairs}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r}: {exc}") from exc


def _check(s: Settings) -> None:
    if s.http_idle_timeout_seconds <= 0 or s.request_read_timeout_seconds <= 0:
        raise ConfigError("http_idle_timeout_seconds and request_read_timeout_seconds must be > 0")
    if s.overload_wait_seconds < 0:
        raise ConfigError("overload_wait_seconds must be >= 0")
    if s.max_in_flight_bytes != 0 and s.max_in_flight_bytes < s.max_body_bytes:
        raise ConfigError("max_in_flight_bytes must be 0 (unlimited) or at least max_body_bytes")
    if s.window_hours <= 0 or s.future_skew_seconds < 0:
        raise ConfigError("window_hours must be > 0 and future_skew_seconds >= 0")
    if s.topic_retention_hours < s.window_hours:
        raise ConfigError("topic_retention_hours must outlast window_hours")
    if s.producer_compression not in ("none", "gzip", "snappy", "lz4", "zstd"):
        raise ConfigError("producer_compression must be none, gzip, snappy, lz4 or zstd")
    check_limits(s.rate_limits, s.rate_limit_bursts, "settings")
    _check_kafka_security(s)
    if not (s.sink.startswith("sqlite:///") or s.sink.startswith(("postgresql://", "postgres://"))):
        raise ConfigError("sink must be sqlite:///path or postgresql://...")


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check_kafka_security(s: Settings) -> None:
    """Refuse half a configuration at start-up rather than fail on every connection later."""
    protocol = s.kafka_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"kafka_security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
    if protocol.startswith("SASL_"):
        if s.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"{protocol} needs kafka_sasl_mechanism: one of {', '.join(SASL_MECHANISMS)}")
        if not s.kafka_sasl_username or s.kafka_sasl_password is None:
            raise ConfigError(f"{protocol} needs kafka_sasl_username and kafka_sasl_password")
    elif s.kafka_sasl_mechanism or s.kafka_sasl_username or s.kafka_sasl_password is not None:
        raise ConfigError(f"SASL settings given but kafka_security_protocol is {protocol}: use SASL_SSL")
    tls_files = (s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile)
    if any(tls_files) and protocol not in ("SSL", "SASL_SSL"):
        raise ConfigError(f"kafka_ssl_* files given but kafka_security_protocol is {protocol}")
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        raise ConfigError("kafka_ssl_keyfile needs kafka_ssl_certfile (the client certificate)")
    for path in tls_files:
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"kafka TLS file {path} does not exist")


def from_environment() -> Settings:
    """The entry point's one read of the process environment."""
    return load(os.environ)
