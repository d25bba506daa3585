"""`eventpipe import`'s line handling (pure): lines read in bounded memory whatever their breaks,
blank lines skipped, an over-long line refused without being held, and each refusal recorded with
the reply the receiver would have given."""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.formats import all_formats
from pipeline.formats.base import Accepted, Rejection
from producers.import_lines import Line, judge, read_lines, reject_record
from producers.importer import resolve_route
from tests.corpus import CORPUS
from tests.unit.test_cli import eventpipe

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FORMATS = all_formats()
TENANTS = {"EVENTPIPE_TENANTS": str(CORPUS / "tenants.toml")}
CLICK = b'{"clicks":[{"id":"c1","occurredAt":"2026-11-23T11:59:00Z","opaqueUserId":"u1"}]}'


def lines(data: bytes, limit: int = 100) -> list[Line]:
    return list(read_lines(io.BytesIO(data), limit))


def test_lines_lose_their_breaks_and_keep_their_numbers() -> None:
    got = lines(b"a\r\nbb\n\n   \nlast-without-break")
    assert [(x.number, x.body) for x in got] == [
        (1, b"a"),
        (2, b"bb"),
        (3, b""),
        (4, b"   "),
        (5, b"last-without-break"),
    ]
    assert [x.blank for x in got] == [False, False, True, True, False]


@pytest.mark.parametrize("length", [11, 12, 13, 5000])
def test_a_line_over_the_limit_is_skipped_whole_and_the_next_one_is_intact(length: int) -> None:
    got = lines(b"x" * length + b"\nnext\n", limit=10)
    assert got[0] == Line(1, None, length)
    assert got[1] == Line(2, b"next", 4)


def test_a_line_exactly_at_the_limit_is_kept() -> None:
    assert lines(b"y" * 10 + b"\r\n", limit=10) == [Line(1, b"y" * 10, 10)]


def test_a_file_that_ends_inside_an_over_long_line() -> None:
    assert lines(b"z" * 50, limit=10) == [Line(1, None, 50)]


def test_judge_accepts_what_the_receiver_accepts() -> None:
    verdict = judge(FORMATS["topsort"], "events", Line(1, CLICK, len(CLICK)), 1000, NOW, 600)
    assert isinstance(verdict, Accepted)
    assert verdict.events == 1


@pytest.mark.parametrize(
    ("source", "route", "body", "status", "reply_has"),
    [
        pytest.param("topsort", "events", b"{oops", 400, {"errCode": "bad_request"}, id="topsort-not-json"),
        pytest.param("topsort", "events", b"{}", 400, {"errCode": "empty_request"}, id="topsort-empty"),
        pytest.param(
            "dfinery",
            "events",
            b'{"event_attributes":{},"user_attributes":{}}',
            400,
            {"result_code": 4002},
            id="dfinery-required",
        ),
        pytest.param(
            "retailrocket",
            "view",
            b'{"productId":1}',
            400,
            {"error": {"path": "$.sessionExternalId"}},
            id="rr-missing",
        ),
        pytest.param(
            "impression",
            "impression",
            b'{"events":[]}',
            400,
            {"errors": {"error": {}}},
            id="impression-empty",
        ),
    ],
)
def test_refused_lines_carry_the_vendors_own_reply(
    source: str, route: str, body: bytes, status: int, reply_has: dict[str, object]
) -> None:
    fmt = FORMATS[source]
    verdict = judge(fmt, route, Line(7, body, len(body)), 1000, NOW, 600)
    assert isinstance(verdict, Rejection)
    record = reject_record(Line(7, body, len(body)), fmt.error(verdict))
    assert record["line"] == 7
    assert record["status"] == status
    for key, value in reply_has.items():
        if isinstance(value, dict):
            assert value.items() <= record["reply"][key].items()
        else:
            assert record["reply"][key] == value
    if source == "dfinery":
        assert "event_attributes.event_id" in record["detail"]
    json.dumps(record)


def test_an_over_long_line_is_refused_as_too_large() -> None:
    fmt = FORMATS["topsort"]
    verdict = judge(fmt, "events", Line(3, None, 5000), 1000, NOW, 600)
    assert isinstance(verdict, Rejection)
    record = reject_record(Line(3, None, 5000), fmt.error(verdict))
    assert record["status"] == 413
    assert record["reply"]["errCode"] == "payload_too_large"
    assert "5000 bytes" in record["reply"]["message"]


def test_routes_are_named_or_given_as_paths_and_required_where_a_vendor_has_many() -> None:
    assert resolve_route(FORMATS["topsort"], None) == "events"
    assert resolve_route(FORMATS["retailrocket"], "/1.0/view") == "view"
    assert resolve_route(FORMATS["retailrocket"], "visitorEvents") == "visitorEvents"
    with pytest.raises(ConfigError, match="visitorEvents"):
        resolve_route(FORMATS["retailrocket"], None)
    with pytest.raises(ConfigError):
        resolve_route(FORMATS["impression"], "/upload/nothing")


def write_lines(path: Path, *lines: str) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_an_unknown_tenant_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", CLICK.decode())
    result = eventpipe("import", source, "--source", "topsort", "--tenant", "nobody", env=TENANTS)
    assert result.returncode == 2
    assert "tenant 'nobody' is not in the tenants file" in result.stderr


@pytest.mark.network
def test_when_kafka_never_answers_nothing_is_sent_and_the_exit_status_says_so(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = write_lines(tmp_path / "in.jsonl", CLICK.decode(), CLICK.decode())
    argv = ["import", source, "--source", "topsort", "--tenant", "shop-a", "--kafka-wait", "1"]
    result = eventpipe(*argv, env={**TENANTS, "EVENTPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert result.returncode == 3, result.stderr
    out = result.stdout
    assert "sent:    0 lines" in out
    assert "NOT SENT from line 1 on" in out
