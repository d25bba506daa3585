"""Tenant ids reach metric labels only when the operator allows it (EVENTPIPE_TENANT_LABELS): the whole
corpus through the receiver, then every sample of its registry is inspected."""

from __future__ import annotations

import pytest

from producers.receiver.app import STATE
from tests.corpus import load_cases
from tests.receiver.test_contract import post

pytestmark = pytest.mark.kafka

CASES = load_cases()
TENANT_IDS = {"shop-a", "shop-b"}


async def run_corpus(receiver_factory, settings) -> list[tuple[str, dict[str, str], float]]:  # type: ignore[no-untyped-def]
    client = await receiver_factory(settings)
    for case in CASES:
        resp = await post(client, case)
        await resp.read()
    registry = client.app[STATE].metrics.registry
    return [
        (family.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if family.name.startswith("eventpipe_")
    ]


async def test_no_label_carries_a_tenant_id_by_default(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    samples = await run_corpus(receiver_factory, kafka_settings)
    assert any(name == "eventpipe_receiver_events_accepted" for name, _, _ in samples)
    for name, labels, _ in samples:
        assert "tenant" not in labels, name
        assert not TENANT_IDS & set(labels.values()), (name, labels)


async def test_tenant_labels_when_allowed(receiver_factory, kafka_settings) -> None:  # type: ignore[no-untyped-def]
    samples = await run_corpus(receiver_factory, kafka_settings.replace(tenant_labels=True))
    accepted = {
        labels["tenant"]
        for name, labels, value in samples
        if name == "eventpipe_receiver_events_accepted" and value > 0
    }
    assert accepted == {"shop-a"}
    refused = {labels["tenant"] for name, labels, _ in samples if name == "eventpipe_receiver_rejections"}
    # Refused before authentication (a wrong key) the tenant is unknown; after it, named.
    assert "unknown" in refused
    assert refused <= {"unknown", *TENANT_IDS}
    # Only the metrics that may carry it do; latency and status counters stay tenant-free.
    tenant_metrics = {name for name, labels, _ in samples if "tenant" in labels}
    assert tenant_metrics == {
        "eventpipe_receiver_events_accepted",
        "eventpipe_receiver_rejections",
    }
