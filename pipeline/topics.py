"""Creates the raw and dead-letter topics, idempotently, with retention that outlasts the window."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.kafka_security import kafka_client_options
from pipeline.settings import Settings

# Room above the receiver's body limit for headers and record overhead.
MESSAGE_BYTES_HEADROOM = 256 * 1024


def topic_configs(settings: Settings) -> dict[str, str]:
    configs = {
        "retention.ms": str(settings.topic_retention_hours * 3600 * 1000),
        "max.message.bytes": str(settings.max_body_bytes + MESSAGE_BYTES_HEADROOM),
        "cleanup.policy": "delete",
    }
    if settings.topic_replication > 1:
        # acks=all then means "on two brokers at least": one broker may fail without losing a 2xx.
        configs["min.insync.replicas"] = str(min(2, settings.topic_replication))
    return configs


async def ensure(settings: Settings) -> list[str]:
    """Create missing topics; returns a line per topic saying what was done."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {
            settings.raw_topic: settings.raw_partitions,
            settings.dlq_topic: max(1, settings.raw_partitions // 4),
        }
        configs = topic_configs(settings)
        report = []
        missing = [
            NewTopic(
                name=name,
                num_partitions=parts,
                replication_factor=settings.topic_replication,
                topic_configs=configs,
            )
            for name, parts in wanted.items()
            if name not in existing
        ]
        if missing:
            # another process may create one between our list and create: the same outcome
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        for name, parts in wanted.items():
            verb = "exists" if name in existing else "created"
            report.append(
                f"{name}: {verb} ({parts} partitions, retention {settings.topic_retention_hours} h)"
            )
        return report
    finally:
        await admin.close()
