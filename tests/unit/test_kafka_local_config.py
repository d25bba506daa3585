"""The broker config that `eventpipe kafka start`, the cluster and the secured test broker render from
deploy/kafka/server.properties."""

from __future__ import annotations

from pathlib import Path

from pipeline import kafka_local
from pipeline.settings import Settings

# The smallest heap the project starts a broker with (tests/secure_kafka.py, tests/faults/services.py).
SMALLEST_HEAP_BYTES = 256 * 1024 * 1024


def rendered(tmp_path: Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    settings = Settings(kafka_bootstrap="127.0.0.1:29092", data_dir=str(tmp_path))
    layout = kafka_local.Layout.from_settings(settings)
    kafka_local.render_config(layout, overrides)
    pairs = (
        line.split("=", 1)
        for line in layout.config.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def test_ports_and_data_dir_follow_the_layout(tmp_path: Path) -> None:
    config = rendered(tmp_path)
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert config["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")


def test_overrides_replace_keys_and_add_new_ones(tmp_path: Path) -> None:
    config = rendered(tmp_path, {"node.id": "3", "sasl.enabled.mechanisms": "PLAIN"})
    assert config["node.id"] == "3"
    assert config["sasl.enabled.mechanisms"] == "PLAIN"


def test_log_cleaner_buffer_leaves_a_small_heap_room(tmp_path: Path) -> None:
    # The cleaner allocates this buffer in one piece at start; Kafka's 128 MiB default killed a
    # 256 MiB test broker with OutOfMemoryError in CI.
    buffer = int(rendered(tmp_path)["log.cleaner.dedupe.buffer.size"])
    assert buffer <= SMALLEST_HEAP_BYTES // 8
