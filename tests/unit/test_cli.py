"""The command line as an operator uses it: help lists every setting, keys are hashed and tokens
minted for the tenants file, migrate creates the table once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from pipeline.tenants import key_digest


def eventpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_commands_and_settings() -> None:
    out = eventpipe("--help").stdout
    for word in ("dev", "kafka", "topics", "receiver", "consumer", "migrate", "keys", "EVENTPIPE_SINK"):
        assert word in out
    sub = eventpipe("receiver", "--help").stdout
    assert "--workers" in sub
    assert "EVENTPIPE_KAFKA_BOOTSTRAP" in sub


def test_keys_hash_prints_the_digest_the_tenants_file_wants() -> None:
    out = eventpipe("keys", "hash", "ep_test_key_1")
    assert out.returncode == 0
    assert out.stdout.strip() == key_digest("ep_test_key_1")


def test_keys_jwt_mints_an_hs256_token_for_the_tenant() -> None:
    out = eventpipe(
        "keys", "jwt", "--tenant", "shop-a", env={"EVENTPIPE_JWT_SECRET": "s3cret-s3cret-s3cret-s3cret-32b!"}
    )
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), "s3cret-s3cret-s3cret-s3cret-32b!", algorithms=["HS256"])
    assert claims["sub"] == "shop-a"
    assert claims["exp"] > claims["iat"]


def test_keys_jwt_without_secret_fails_clearly() -> None:
    out = eventpipe("keys", "jwt", "--tenant", "x", env={"EVENTPIPE_JWT_SECRET": ""})
    assert out.returncode == 1
    assert "EVENTPIPE_JWT_SECRET" in out.stderr


def test_migrate_creates_the_events_table_once(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "events.db"
    env = {"EVENTPIPE_SINK": f"sqlite:///{db}"}
    first = eventpipe("migrate", env=env)
    second = eventpipe("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "created" in first.stdout
    assert "already" in second.stdout
    conn = sqlite3.connect(db)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
    finally:
        conn.close()
    assert columns[:4] == ["tenant", "source", "event_type", "event_id"]


def test_bad_setting_is_a_clear_error() -> None:
    out = eventpipe("topics", "ensure", env={"EVENTPIPE_HTTP_PORT": "eighty"})
    assert out.returncode == 2
    assert "http_port" in out.stderr


def test_dev_names_eventpipe_as_the_shell_that_started_it_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventpipe.dev import program

    beside = Path(sys.executable).parent / "eventpipe"
    assert beside.exists()  # the venv's script, installed with the package
    assert program({"PATH": str(beside.parent)}) == "eventpipe"
    # `make dev` runs .venv/bin/eventpipe without the venv on the PATH: the script's own path then.
    monkeypatch.chdir(beside.parent.parent.parent)
    assert program({"PATH": str(tmp_path)}) == os.path.relpath(beside)
    monkeypatch.chdir(tmp_path)
    assert program({"PATH": str(tmp_path)}) == str(beside)
