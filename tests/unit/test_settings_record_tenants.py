"""Settings loading, the Kafka record's headers and the tenants file: pure."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import settings as settings_mod
from pipeline import tenants
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.record import RecordMeta
from tests.corpus import CORPUS


def test_defaults_match_design() -> None:
    s = settings_mod.load({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.raw_topic, s.dlq_topic, s.consumer_group) == (
        "eventpipe.raw",
        "eventpipe.dlq",
        "eventpipe-sink",
    )
    assert s.sink == "sqlite:///./.eventpipe/events.db"
    assert (s.http_host, s.http_port, s.metrics_port) == ("127.0.0.1", 8080, 9400)
    assert (s.window_hours, s.future_skew_seconds) == (48.0, 600.0)


def test_environment_then_toml_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("http_port = 9000\nwindow_hours = 24\nwindow_hours_by_source = { dfinery = 48 }\n")
    env = {"EVENTPIPE_CONFIG": str(config), "EVENTPIPE_HTTP_PORT": "9100", "EVENTPIPE_TENANT_LABELS": "true"}
    s = settings_mod.load(env, http_host="0.0.0.0")
    assert s.http_port == 9100  # environment beats the file
    assert s.window_hours == 24
    assert s.window_for("dfinery") == 48 and s.window_for("topsort") == 24
    assert s.tenant_labels is True
    assert s.http_host == "0.0.0.0"


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"EVENTPIPE_HTTP_PORT": "x"}, id="not-an-int"),
        pytest.param({"EVENTPIPE_SINK": "mysql://x"}, id="unknown-sink"),
        pytest.param({"EVENTPIPE_WINDOW_HOURS": "0"}, id="zero-window"),
        pytest.param({"EVENTPIPE_TOPIC_RETENTION_HOURS": "24"}, id="retention-shorter-than-window"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        settings_mod.load(env)


def test_unknown_key_in_toml(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        settings_mod.load({"EVENTPIPE_CONFIG": str(config)})


def test_help_lists_every_setting() -> None:
    text = settings_mod.describe()
    for name in (
        "EVENTPIPE_KAFKA_BOOTSTRAP",
        "EVENTPIPE_SINK",
        "EVENTPIPE_TENANTS",
        "EVENTPIPE_WINDOW_HOURS",
    ):
        assert name in text


def test_record_headers_round_trip() -> None:
    meta = RecordMeta("topsort", "events", "shop-a", 1_700_000_000_123, "abc")
    assert RecordMeta.from_headers(meta.headers()) == meta


def test_received_at_is_the_header_as_aware_utc() -> None:
    meta = RecordMeta("topsort", "events", "shop-a", 1_700_000_000_123, "abc")
    assert meta.received_at == datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="none"),
        pytest.param([("source", b"topsort")], id="missing"),
        pytest.param(
            [(n, b"x") for n in ("source", "route", "tenant", "request_id")]
            + [("received_at", b"1"), ("schema", b"9")],
            id="unknown-schema",
        ),
        pytest.param(
            [(n, b"x") for n in ("source", "route", "tenant", "request_id", "received_at")]
            + [("schema", b"1")],
            id="bad-received-at",
        ),
    ],
)
def test_foreign_records_are_undecodable(headers: list[tuple[str, bytes]] | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        RecordMeta.from_headers(headers)
    assert info.value.reason == "undecodable"


def test_corpus_tenants_file() -> None:
    directory = tenants.load(str(CORPUS / "tenants.toml"), {"EVENTPIPE_TEST_JWT_SECRET": "s3cret"})
    shop_a = directory.by_key("ep_test_key_1")
    assert shop_a is not None and shop_a.id == "shop-a"
    assert shop_a.jwt_secrets == ("s3cret",)
    assert directory.by_key("ep_test_key_2").id == "shop-b"  # type: ignore[union-attr]
    assert directory.by_key("ep_wrong_key") is None
    assert directory.by_key("") is None


def test_keys_in_clear_are_refused() -> None:
    with pytest.raises(ConfigError, match="digest"):
        tenants.parse('[[tenants]]\nid = "x"\napi_keys = ["plain-key"]\n', {})


def test_key_digest_format() -> None:
    assert (
        tenants.key_digest("ep_test_key_1")
        == "sha256:d6a60eb1364a4ebf6ba1bcfb7c744a5bf7b67e69afcc3b0fb7f560683ad7603d"
    )
