"""Which rate limit applies to which caller: per-source defaults from the settings, overridden per
tenant in the tenants file, resolved once at start-up into a fixed table of buckets, one per
(tenant, source, site). Every receiver process builds the same table from the same inputs, so a slot
number names the same bucket in all of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.settings import Settings
from pipeline.tenants import Tenant, TenantDirectory
from pipeline.token_bucket import Limit

# Retail Rocket limits "per site" (площадка), and its partnerId is the site's identifier: a tenant with
# two shops gets two budgets, as it would from Retail Rocket. The other vendors limit per key or token,
# which is one tenant here.
PER_SITE_SOURCE = "retailrocket"

# (tenant id, source, site: the Retail Rocket partnerId, else "")
BucketKey = tuple[str, str, str]


def limit_for(settings: Settings, tenant: Tenant, source: str) -> Limit | None:
    """The tenant's limit for a source, None when unlimited. The burst is the tenant's, else the
    source's setting, else one second's worth of the rate (at least one request)."""
    rate = tenant.rate_limits.get(source, settings.rate_for(source))
    if rate == 0:
        return None
    burst = tenant.rate_limit_bursts.get(source) or settings.rate_limit_bursts.get(source) or max(1.0, rate)
    return Limit(rate, burst)


@dataclass(frozen=True)
class LimitTable:
    keys: tuple[BucketKey, ...]
    limits: tuple[Limit, ...]
    _index: Mapping[BucketKey, tuple[int, Limit]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {
            key: (slot, limit) for slot, (key, limit) in enumerate(zip(self.keys, self.limits, strict=True))
        }
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, settings: Settings, tenants: TenantDirectory) -> LimitTable:
        from pipeline.formats import all_formats

        sources = sorted(all_formats())
        keys: list[BucketKey] = []
        limits: list[Limit] = []
        for tenant in tenants.tenants:
            for source in sources:
                limit = limit_for(settings, tenant, source)
                if limit is None:
                    continue
                sites = sorted(tenant.retailrocket_partner_ids) if source == PER_SITE_SOURCE else [""]
                for site in sites:
                    keys.append((tenant.id, source, site))
                    limits.append(limit)
        return cls(tuple(keys), tuple(limits))

    def lookup(self, key: BucketKey) -> tuple[int, Limit] | None:
        """The key's slot and limit, or None when the caller is not limited."""
        return self._index.get(key)
