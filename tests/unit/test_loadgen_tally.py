"""What loadgen predicts from the receiver's replies (pure): the first accepted copy of an event is
stored and later ones are duplicates, whatever order they come in; refused or unanswered requests
predict nothing; the summary names the series an operator checks."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import jwt
import pytest

from eventpipe.loadgen import summary
from eventpipe.loadgen.command import _config, credentials
from eventpipe.loadgen.options import add_arguments
from eventpipe.loadgen.tally import Histogram, Tally
from eventpipe.loadgen.traffic import Kind, Origin, PlannedEvent, PlannedRequest
from pipeline.errors import ConfigError
from pipeline.settings import Settings


def request(*events: PlannedEvent, source: str = "topsort", accepted: bool = True) -> PlannedRequest:
    return PlannedRequest(source, "/v2/events", "events", b"{}", tuple(events), expect_accepted=accepted)


def event(kind: Kind, origin: Origin | None = None, event_id: str = "e") -> PlannedEvent:
    return PlannedEvent(
        kind, "click", event_id, origin if origin is not None or kind is Kind.INVALID else Origin()
    )


def test_first_accepted_copy_is_stored_later_copies_are_duplicates() -> None:
    origin = Origin()
    tally = Tally()
    # the original's request fails, the retry is accepted, a further copy too
    tally.record(request(event(Kind.VALID, origin)), 503)
    tally.record(request(event(Kind.DUPLICATE, origin)), 204)
    tally.record(request(event(Kind.DUPLICATE, origin), event(Kind.LATE), event(Kind.FUTURE)), 204)
    assert tally.expected["topsort"] == {"stored": 1, "duplicate": 1, "late": 1, "future": 1}
    assert tally.accepted_events["topsort"] == 4
    assert tally.not_as_planned == 1  # the 503
    assert tally.statuses == {"503": 1, "204": 2}


def test_unanswered_requests_are_uncertain_and_refusals_predict_nothing() -> None:
    tally = Tally()
    tally.record(request(event(Kind.VALID), event(Kind.VALID)), None, error="TimeoutError")
    tally.record(request(event(Kind.INVALID), accepted=False), 400, body=b'{"errCode":"bad_request"}')
    assert tally.uncertain_events == 2
    assert tally.no_reply == 1
    assert tally.expected == {}
    assert tally.as_planned == 1
    assert tally.statuses == {"no reply (TimeoutError)": 1, "400": 1}


def test_an_invalid_body_accepted_is_not_as_planned_and_kept_as_a_sample() -> None:
    tally = Tally()
    tally.record(request(event(Kind.INVALID), accepted=False), 204)
    assert tally.not_as_planned == 1
    assert tally.uncertain_events == 1
    assert tally.samples[0].status == "204"


def test_rate_limited_requests_are_counted_apart_and_predict_nothing() -> None:
    origin = Origin()
    tally = Tally()
    tally.record(request(event(Kind.VALID, origin)), 429, body=b'{"result_code":4006}')
    tally.record(request(event(Kind.DUPLICATE, origin)), 204)
    assert tally.rate_limited == 1
    assert tally.not_as_planned == 0
    assert tally.as_planned == 1
    # the copy that got through is the one stored
    assert tally.expected["topsort"] == {"stored": 1}


def test_histogram_quantiles_are_within_two_percent() -> None:
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    assert histogram.quantile(0.5) == pytest.approx(0.5, rel=0.02)
    assert histogram.quantile(0.99) == pytest.approx(0.99, rel=0.02)
    assert histogram.max == 1.0
    assert Histogram().quantile(0.5) == 0.0


def test_summary_states_the_dashboard_figures() -> None:
    tally = Tally()
    tally.record(request(event(Kind.VALID, event_id="a"), event(Kind.LATE)), 204, latency=0.004)
    tally.record(request(event(Kind.VALID, event_id="b"), source="dfinery"), 200, latency=0.002)
    info = summary.RunInfo("http://x", "shop-a", 1, 10.0, 1.0, 2, 4, ["topsort", "dfinery"], {}, "now", 1.0)
    built = summary.build(tally, info)
    assert built["expected"]["eventpipe_consumer_events_total"]["topsort"] == {
        "stored": 1,
        "duplicate": 0,
        "late": 1,
        "future": 0,
        "invalid": 0,
    }
    assert built["expected"]["rows_added"] == 2
    assert built["expected"]["eventpipe_receiver_events_accepted_total"] == {"topsort": 2, "dfinery": 1}
    json.dumps(built)  # the --json output is plain JSON
    text = summary.render(built)
    for name in ("eventpipe_consumer_events_total", "eventpipe_receiver_events_accepted_total", "rows added"):
        assert name in text
    assert re.search(r"stored\s+1\s+1\s+2\n\s+duplicate\s+0\s+0\s+0\n\s+late\s+1\s+0\s+1", text), text


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_credentials_come_from_the_file_eventpipe_dev_writes(tmp_path: Path) -> None:
    keys = tmp_path / "demo-keys.json"
    keys.write_text(
        json.dumps({"tenant": "demo", "api_key": "k1", "partner_id": "p1", "jwt_secret": "s" * 32})
    )
    tenant, creds = credentials(parse("--credentials", str(keys)), {}, 3600)
    assert (tenant, creds.api_key, creds.partner_id) == ("demo", "k1", "p1")
    assert creds.jwt is not None
    assert jwt.decode(creds.jwt, "s" * 32, algorithms=["HS256"])["sub"] == "demo"
    # flags win over the file
    _, creds = credentials(parse("--credentials", str(keys), "--api-key", "k2", "--jwt", "t"), {}, 3600)
    assert (creds.api_key, creds.jwt) == ("k2", "t")


def test_missing_credentials_and_bad_options_are_config_errors() -> None:
    tenant, creds = credentials(parse("--api-key", "k"), {}, 3600)
    with pytest.raises(ConfigError, match="partner"):
        creds.check(["retailrocket"])
    with pytest.raises(ConfigError, match="JWT"):
        creds.check(["impression"])
    creds.check(["topsort", "dfinery"])
    with pytest.raises(ConfigError, match="not set"):
        credentials(parse("--jwt-secret-env", "NOPE"), {}, 3600)
    with pytest.raises(ConfigError, match="batch"):
        _config(parse("--batch", "51"), Settings(), tenant)
    with pytest.raises(ConfigError, match="sources"):
        _config(parse("--sources", "topsort,acme"), Settings(), tenant)
    with pytest.raises(ConfigError, match="shares"):
        _config(parse("--duplicates", "0.7", "--invalid", "0.7"), Settings(), tenant)
    assert parse("--duration", "10m").duration == 600.0
