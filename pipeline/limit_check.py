"""The check of rate-limit tables as written in the settings or a tenants file. It sits below both:
settings and tenants import it, and it imports neither (rate_limits.py, which resolves the limits,
imports them)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from pipeline.errors import ConfigError


def check_limits(rates: Mapping[str, float], bursts: Mapping[str, float], where: str) -> None:
    """Raise ConfigError naming the bad entry: unknown sources, rates < 0, bursts < 1, non-finite numbers."""
    # Deferred: the vendor formats load their schemas, which settings (imported everywhere) need not.
    from pipeline.formats import all_formats

    known = sorted(all_formats())
    for name, table in (("rate_limits", rates), ("rate_limit_bursts", bursts)):
        for source in table:
            if source not in known:
                raise ConfigError(
                    f"{where}: {name} names unknown source {source!r}; known: {', '.join(known)}"
                )
    for source, rate in rates.items():
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError(
                f"{where}: rate_limits.{source} must be requests per second >= 0 (0 = unlimited), not {rate!r}"
            )
    for source, burst in bursts.items():
        if not (math.isfinite(burst) and burst >= 1):
            raise ConfigError(
                f"{where}: rate_limit_bursts.{source} must be a number of requests >= 1, not {burst!r}"
            )
