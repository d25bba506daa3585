"""Real requests through the in-process receiver for the operations tests: one Topsort click per
request, so records, events and rows count alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.corpus import restamp
from tests.integration.conftest import Pipeline
from tests.integration.test_pipeline import accepted_cases, personalize


async def post_clicks(pipeline: Pipeline, count: int, at: datetime | None = None) -> list[str]:
    """Send `count` click requests, each accepted (204); returns their event ids."""
    click = next(c for c in accepted_cases() if c.id == "topsort-spec-click")
    ids = []
    for _ in range(count):
        case = personalize(restamp(click, at or datetime.now(UTC)), uuid.uuid4().hex[:8])
        resp = await pipeline.post(case)
        assert resp.status == 204, await resp.text()
        ids.append(case.body_json["clicks"][0]["id"])
    return ids
