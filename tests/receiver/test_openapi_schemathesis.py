"""schemathesis against the receiver's own /openapi.json, served by a real `eventpipe receiver` with the
real broker: requests generated from the document (valid and invalid bodies, every vendor's credentials
from its security scheme), and each reply checked against the document: no server error, a documented
status, content type, headers and body schema, credentials not ignored."""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis

from pipeline.formats import all_formats
from pipeline.tenants import mint_jwt
from producers.receiver.openapi import document
from tests.corpus import API_KEY, PARTNER_ID, jwt_secret
from tests.kafka_util import unique_settings
from tests.processes import EventpipeProcess, running_receiver

pytestmark = pytest.mark.kafka

# Fuzzed cases per operation; a long run also turns on the coverage phase (boundary values of every
# schema, several thousand cases), too slow for every CI run.
EXAMPLES = int(os.environ.get("EVENTPIPE_SCHEMATHESIS_EXAMPLES", "25"))
COVERAGE = os.environ.get("EVENTPIPE_SCHEMATHESIS_COVERAGE", "") == "1"


def _config() -> schemathesis.Config:
    token = mint_jwt("shop-a", jwt_secret())
    return schemathesis.Config.from_dict(
        {
            "auth": {
                "openapi": {
                    "apiKeyBearer": {"bearer": API_KEY},
                    "jwtBearer": {"bearer": token},
                    "jwtQuery": {"api_key": token},
                    "retailRocketApiKey": {"api_key": API_KEY},
                    "retailRocketPartnerId": {"api_key": PARTNER_ID},
                }
            },
            "generation": {"max-examples": EXAMPLES, "mode": "all"},
            "phases": {"coverage": {"enabled": COVERAGE}},
            "checks": {
                # A schema cannot say "within ten minutes of the receiver's clock" (Topsort's occurredAt)
                # or "an ISO 8601 string" (Retail Rocket's timestamp): schema-valid bodies are refused
                # by design, so the document is held to the converse only (negative_data_rejection).
                "positive_data_acceptance": {"enabled": False},
            },
            "operations": [
                # DFINERY's document answers an invalid token with 400 and result_code 4001, not 401;
                # a missing token still gets 401 (tests/unit/test_format_dfinery.py).
                {"include-path": "/api/v1/events", "checks": {"ignored_auth": {"enabled": False}}},
                # Retail Rocket's apiKey and partnerId are required query parameters: a request without
                # them is malformed, 400 naming the one missing (issue #12); a wrong key still gets 401 and
                # a key of another partner 403 (tests/receiver/test_error_replies.py).
                {"include-path-regex": "^/1\\.0/", "checks": {"ignored_auth": {"enabled": False}}},
            ],
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    )


# The document the receiver serves is a pure function of the vendor formats: loaded here at collection
# (schemathesis's fixture-based loader does not run on this pytest), checked to be what the process
# serves below.
DOCUMENT = document(all_formats())
schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())


@pytest.fixture(scope="module")
def receiver(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventpipeProcess]:
    with running_receiver(unique_settings(kafka_bootstrap), tmp_path_factory.mktemp("schemathesis")) as proc:
        yield proc


@pytest.fixture(scope="module")
def statuses(fuzz_tally: dict[str, Counter[int]]) -> Counter[int]:
    return fuzz_tally.setdefault("schemathesis against /openapi.json", Counter())


def test_the_served_document_is_the_one_tested(receiver: EventpipeProcess) -> None:
    with urllib.request.urlopen(f"{receiver.url}/openapi.json", timeout=30) as resp:  # noqa: S310
        assert json.loads(resp.read()) == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
def test_the_receiver_keeps_to_its_openapi_document(
    case: schemathesis.Case, receiver: EventpipeProcess, statuses: Counter[int]
) -> None:
    response = case.call_and_validate(base_url=receiver.url)
    statuses[response.status_code] += 1
