"""Read-only look-ups on the broker, without joining any group: the cluster, the partitions and
retention of topics, offsets (first, next, first at a time), a group's members and commits, and the
reasons of a range of dead letters. For `eventpipe status` and `eventpipe replay`."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import for_code

RETENTION = "retention.ms"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Cluster(msgspec.Struct, frozen=True):
    cluster_id: str | None
    controller_id: int | None
    broker_ids: list[int]


class Member(msgspec.Struct, frozen=True):
    member_id: str
    client_id: str
    host: str
    assigned: dict[str, list[int]]  # topic -> partitions


class GroupDescription(msgspec.Struct, frozen=True):
    group_id: str
    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, or Dead (no such group)
    members: list[Member]


class HeaderCount(msgspec.Struct, frozen=True):
    counts: dict[str, int]
    complete: bool  # False when the limit or the deadline cut the reading short


class KafkaLookup:
    """An admin client and a group-less consumer, opened by start() and closed by close(). Every call
    raises aiokafka's KafkaError (or TimeoutError) when the broker does not answer."""

    def __init__(self, client_options: Mapping[str, Any], *, timeout_seconds: float = 10.0) -> None:
        """`client_options`: pipeline.kafka_security.kafka_client_options(settings)."""
        self._timeout = timeout_seconds
        timeout_ms = int(timeout_seconds * 1000)
        self._admin = AIOKafkaAdminClient(**client_options, request_timeout_ms=timeout_ms)
        self._consumer = AIOKafkaConsumer(
            **client_options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Records of a receiver's aborted transaction (its requests were answered 503) are skipped,
            # and those of one under way wait for its commit: producers/receiver/transactions.py.
            isolation_level="read_committed",
            request_timeout_ms=timeout_ms,
        )

    async def start(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self._admin.start()
            await self._consumer.start()

    async def close(self) -> None:
        """Safe after a failed or no start()."""
        await self._consumer.stop()
        await self._admin.close()

    async def cluster(self) -> Cluster:
        found = await self._admin.describe_cluster()
        brokers = sorted(int(b["node_id"]) for b in found.get("brokers", []))
        return Cluster(found.get("cluster_id"), found.get("controller_id"), brokers)

    async def partitions(self, topics: Sequence[str]) -> dict[str, list[TopicPartition]]:
        """The partitions of each topic that exists; a missing topic is absent from the result.
        Metadata of all topics is asked for, never of named ones, so that a broker with
        auto.create.topics.enable does not create a topic because we looked."""
        wanted = set(topics)
        found: dict[str, list[TopicPartition]] = {}
        for topic in await self._admin.describe_topics():
            name = topic["topic"]
            if name in wanted and not topic["error_code"]:
                found[name] = sorted(TopicPartition(name, p["partition"]) for p in topic["partitions"])
        return found

    async def retention_ms(self, topics: Sequence[str]) -> dict[str, int | None]:
        """retention.ms of each topic (-1: kept forever)."""
        if not topics:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, {RETENTION: None}) for t in topics]
        found: dict[str, int | None] = dict.fromkeys(topics)
        for response in await self._admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] == RETENTION and entry["config_value"] is not None:
                        found[resource["resource_name"]] = int(entry["config_value"])
        return found

    async def first_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self._consumer.beginning_offsets(list(tps))) if tps else {}

    async def next_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermarks: the offset the next record of each partition will get."""
        return dict(await self._consumer.end_offsets(list(tps))) if tps else {}

    async def offsets_at(
        self, tps: Sequence[TopicPartition], at: datetime
    ) -> dict[TopicPartition, int | None]:
        """The first offset whose record timestamp is at or after `at`; None where no record is."""
        if not tps:
            return {}
        # Rounded up and computed exactly: a float epoch can land a millisecond early.
        at_ms = math.ceil((at - EPOCH) / timedelta(milliseconds=1))
        found = await self._consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
        return {tp: None if hit is None else int(hit.offset) for tp, hit in found.items()}

    async def group(self, group_id: str) -> GroupDescription:
        # One group per request: aiokafka 0.14 misreads a DescribeGroups answer about several.
        (response,) = await self._admin.describe_consumer_groups([group_id])
        (group,) = response.to_object()["groups"]
        if group["error_code"]:
            raise for_code(group["error_code"])(f"describing group {group_id}")
        members = [
            Member(m["member_id"], m["client_id"], m["client_host"], _assignment(m["member_assignment"]))
            for m in group["members"]
        ]
        return GroupDescription(group_id, group["state"], sorted(members, key=lambda m: m.member_id))

    async def committed(self, group_id: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets; partitions without a commit are absent."""
        if not tps:
            return {}
        found = await self._admin.list_consumer_group_offsets(group_id, partitions=list(tps))
        return {tp: int(meta.offset) for tp, meta in found.items() if meta.offset >= 0}

    async def count_header(
        self, ranges: Mapping[TopicPartition, tuple[int, int]], header: str, limit: int
    ) -> HeaderCount:
        """Records in [start, end) of each partition counted by the value of one header ("" when the
        record lacks it), reading at most `limit` records within the look-up timeout."""
        pending = {tp: end for tp, (start, end) in ranges.items() if start < end}
        counts: Counter[str] = Counter()
        if not pending:
            return HeaderCount({}, True)
        self._consumer.assign(list(pending))
        for tp in pending:
            self._consumer.seek(tp, ranges[tp][0])
        read = 0
        try:
            async with asyncio.timeout(self._timeout):
                while pending and read < limit:
                    # max_records bounds the whole answer, so no record fetched goes uncounted.
                    batch = await self._consumer.getmany(
                        *pending, timeout_ms=500, max_records=min(limit - read, 1000)
                    )
                    for tp, records in batch.items():
                        for record in records:
                            read += 1
                            if record.offset < pending[tp]:  # later ones arrived after we looked
                                value = dict(record.headers).get(header)
                                counts[(value or b"").decode(errors="replace")] += 1
                    for tp in list(pending):
                        if await self._consumer.position(tp) >= pending[tp]:
                            del pending[tp]
        except TimeoutError:
            pass  # the counts so far, reported as incomplete
        finally:
            self._consumer.unsubscribe()
        return HeaderCount(dict(counts), not pending)


def _assignment(raw: bytes) -> dict[str, list[int]]:
    # Empty while the group is rebalancing: the member has nothing assigned yet.
    if not raw:
        return {}
    decoded = ConsumerProtocolMemberAssignment.decode(raw)
    return {topic: sorted(partitions) for topic, partitions in decoded.assignment}
