"""Every metric eventpipe exposes, declared once, each with a one-line comment. The registry belongs
to whoever builds the app or the worker; tests get a fresh one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
SKEW_BUCKETS = (0.0, 1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0, 48 * 3600.0, 7 * 86400.0)
SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 50000)
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576)


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, tenant_labels: bool = False) -> None:
        self.registry = registry
        r = registry
        # Tenant ids become a label only where the operator allowed it (settings.tenant_labels): they
        # multiply series, and a tenant id can identify a customer.
        self.tenant_labels = tenant_labels
        by_tenant = ["tenant"] if tenant_labels else []
        # Receiver: requests answered, by vendor, route and HTTP status; CORS preflights (OPTIONS) count
        # under route="preflight".
        self.requests = Counter(
            "eventpipe_receiver_requests", "HTTP requests answered", ["source", "route", "status"], registry=r
        )
        # Receiver: time from request start to reply, including the Kafka acknowledgement.
        self.request_latency = Histogram(
            "eventpipe_receiver_request_duration_seconds",
            "Request latency",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Receiver: events inside accepted requests (a Topsort batch of 50 counts 50); tenant if allowed.
        self.events_accepted = Counter(
            "eventpipe_receiver_events_accepted",
            "Events accepted and durable in Kafka",
            ["source", *by_tenant],
            registry=r,
        )
        # Receiver: request body sizes after decompression.
        self.request_bytes = Histogram(
            "eventpipe_receiver_request_bytes",
            "Request body bytes",
            ["source"],
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        # Receiver: time for Kafka to acknowledge one record (acks=all).
        self.produce_latency = Histogram(
            "eventpipe_kafka_produce_duration_seconds",
            "Kafka produce latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Receiver: records per Kafka batch it sends (batching.py): the records of concurrent requests
        # share a batch, and the broker's work per record falls as batches grow.
        self.produce_batch_records = Histogram(
            "eventpipe_kafka_produce_batch_records",
            "Records per Kafka batch the receiver sends",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        # Receiver, writing in transactions (EVENTPIPE_KAFKA_TRANSACTIONAL_ID): transactions by outcome,
        # committed or aborted (its requests answered 503; nothing of it is ever stored).
        self.transactions = Counter(
            "eventpipe_kafka_transactions",
            "Kafka transactions of the receiver, by outcome",
            ["outcome"],
            registry=r,
        )
        # Receiver: requests being handled right now.
        self.in_flight = Gauge(
            "eventpipe_receiver_in_flight_requests",
            "In-flight requests",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Receiver: request body bytes reserved by the requests in flight (admission.py), summed over
        # the workers; each worker's own is bounded by EVENTPIPE_MAX_IN_FLIGHT_BYTES.
        self.in_flight_bytes = Gauge(
            "eventpipe_receiver_in_flight_bytes",
            "Request body bytes reserved by in-flight requests",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Receiver: refused requests by reason (auth, origin, schema, too_large, rate_limited, unavailable,
        # overloaded: refused unread by admission, ...); tenant if allowed ("unknown" before authentication).
        self.rejections = Counter(
            "eventpipe_receiver_rejections",
            "Requests refused",
            ["source", "reason", *by_tenant],
            registry=r,
        )
        # Receiver: tenants file reloads (SIGHUP, `eventpipe tenants reload`) by outcome: reloaded or
        # refused; each worker counts its own.
        self.tenants_reloads = Counter(
            "eventpipe_receiver_tenants_reloads", "Tenants file reloads", ["outcome"], registry=r
        )
        # Receiver: which tenants file each process serves (0: the one read at start, then the number of
        # the reload request that brought it); one series per live worker under --workers N.
        self.tenants_generation = Gauge(
            "eventpipe_receiver_tenants_generation",
            "Generation of the tenants file served",
            registry=r,
            multiprocess_mode="liveall",
        )
        # Receiver and consumer: 1 when ready to serve (producer connected / group joined and sink up).
        self.ready = Gauge("eventpipe_ready", "Readiness", ["component"], registry=r, multiprocess_mode="min")
        # Consumer: events by vendor and outcome (stored, duplicate, late, future, invalid).
        self.consumer_events = Counter(
            "eventpipe_consumer_events", "Events processed by outcome", ["source", "outcome"], registry=r
        )
        # Consumer: Kafka records per batch.
        self.batch_size = Histogram(
            "eventpipe_consumer_batch_records", "Records per batch", buckets=SIZE_BUCKETS, registry=r
        )
        # Consumer: time to write one batch into the sink (one transaction).
        self.sink_latency = Histogram(
            "eventpipe_sink_write_duration_seconds",
            "Sink write latency",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Consumer: from the receiver's received_at to the rows being committed, once per request.
        self.end_to_end = Histogram(
            "eventpipe_end_to_end_seconds",
            "received_at to stored",
            ["source"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        # Consumer: records behind the high watermark, per partition.
        self.lag = Gauge(
            "eventpipe_consumer_lag_records",
            "Consumer lag",
            ["topic", "partition"],
            registry=r,
            multiprocess_mode="max",
        )
        # Consumer: time to commit offsets to Kafka.
        self.commit_latency = Histogram(
            "eventpipe_consumer_commit_duration_seconds",
            "Offset commit latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Consumer: events and records sent to the dead-letter topic, by reason.
        self.dead_letters = Counter(
            "eventpipe_dead_letters", "Dead-lettered events", ["source", "reason"], registry=r
        )
        # Consumer: event-time skew, received_at minus occurred_at.
        self.event_skew = Histogram(
            "eventpipe_event_time_skew_seconds",
            "received_at - occurred_at",
            ["source"],
            buckets=SKEW_BUCKETS,
            registry=r,
        )
        # Consumer: failed sink writes that will be retried (the sink is down or full).
        self.sink_errors = Counter("eventpipe_sink_errors", "Sink write failures", ["sink"], registry=r)
        # Consumer: partition rebalances seen by this worker.
        self.rebalances = Counter("eventpipe_consumer_rebalances", "Rebalances", ["kind"], registry=r)

    def tenant(self, tenant: str | None) -> tuple[str, ...]:
        """The tenant label's value for the metrics that may carry it: none unless allowed."""
        if not self.tenant_labels:
            return ()
        return (tenant or "unknown",)


def fresh(*, tenant_labels: bool = False) -> Metrics:
    return Metrics(CollectorRegistry(auto_describe=True), tenant_labels=tenant_labels)
