"""What /metrics renders: this process's registry, or, with several receiver processes, the
aggregate of all of them (prometheus-client's multiprocess mode) so that a scrape never sees one
random worker."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


@dataclass(frozen=True)
class MetricsView:
    registry: CollectorRegistry
    multiprocess_dir: str | None = None

    @classmethod
    def single(cls, registry: CollectorRegistry) -> MetricsView:
        return cls(registry)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate)
