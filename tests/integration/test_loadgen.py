"""`eventpipe loadgen` as an operator runs it, against a real receiver, the real broker and a real
consumer into SQLite: what the consumer counts (stored, duplicate, late, future) and the rows it
writes are exactly what loadgen's summary said to expect, and its ledger names the stored events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventpipe.loadgen.tally import OUTCOMES
from producers.receiver.app import STATE
from tests.cli_process import eventpipe
from tests.corpus import API_KEY, JWT_SECRET_ENV, PARTNER_ID, jwt_secret
from tests.integration.conftest import Pipeline, query
from tests.waiting import wait_for

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("sink_url", ["sqlite"], indirect=True)
async def test_consumer_counts_and_rows_equal_what_loadgen_predicted(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await pipeline.start_consumer()
    summary_file, ledger_file = tmp_path / "summary.json", tmp_path / "ledger.jsonl"
    argv = [
        "loadgen",
        *("--url", str(pipeline.client.make_url(""))),
        *("--tenant", "shop-a", "--api-key", API_KEY, "--partner-id", PARTNER_ID),
        *("--jwt-secret-env", JWT_SECRET_ENV),
        *("--rate", "50", "--duration", "4", "--batch", "4", "--seed", "7"),
        *("--duplicates", "0.1", "--late", "0.05", "--future", "0.05", "--invalid", "0.05"),
        *("--json", str(summary_file), "--ledger", str(ledger_file)),
    ]
    result = await eventpipe(*argv, env={JWT_SECRET_ENV: jwt_secret()})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(summary_file.read_text())
    sent, expected = summary["sent"], summary["expected"]
    assert sum(sent["requests"].values()) == 200
    assert expected["uncertain_events"] == 0
    assert all(n > 0 for n in sent["events_by_kind"].values()), sent

    receiver = pipeline.client.app[STATE].metrics.registry
    for source, n in expected["eventpipe_receiver_events_accepted_total"].items():
        assert receiver.get_sample_value("eventpipe_receiver_events_accepted_total", {"source": source}) == n

    consumer = pipeline.metrics[0].registry
    predicted = expected["eventpipe_consumer_events_total"]

    def counted() -> dict[str, dict[str, int]]:
        return {
            source: {
                o: int(
                    consumer.get_sample_value(
                        "eventpipe_consumer_events_total", {"source": source, "outcome": o}
                    )
                    or 0
                )
                for o in OUTCOMES
            }
            for source in predicted
        }

    def total(counts: dict[str, dict[str, int]]) -> int:
        return sum(sum(c.values()) for c in counts.values())

    # Every accepted event gets exactly one outcome: wait until as many are counted, then compare.
    await wait_for(lambda: total(counted()) >= total(predicted), 60, lambda: f"{predicted}, have {counted()}")
    assert counted() == predicted
    records = sum(n for status, n in summary["replies"]["by_status"].items() if status.startswith("2"))
    assert consumer.get_sample_value("eventpipe_consumer_batch_records_sum") == records
    assert all(predicted[s]["stored"] and predicted[s]["late"] for s in predicted), predicted

    rows = await query(pipeline.settings.sink, "SELECT source, event_type, event_id, tenant FROM events")
    assert len(rows) == expected["rows_added"]
    ledger = [json.loads(line) for line in ledger_file.read_text().splitlines()]
    kept = {
        (e["source"], e["event_type"], e["event_id"], "shop-a")
        for e in ledger
        if e["kind"] in ("valid", "duplicate")
    }
    assert set(rows) == kept
