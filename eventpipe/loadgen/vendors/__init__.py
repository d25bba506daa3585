"""Request bodies of each vendor as real clients send them, one module per vendor (as in
pipeline/formats): valid events, their schema-invalid variants, and the request that carries them."""

from __future__ import annotations

from collections.abc import Mapping

from eventpipe.loadgen.vendors.base import VendorTraffic


def all_vendors(tenant: str) -> Mapping[str, VendorTraffic]:
    from eventpipe.loadgen.vendors import dfinery, impression, retailrocket, topsort

    vendors: list[VendorTraffic] = [
        topsort.TopsortTraffic(),
        retailrocket.RetailRocketTraffic(tenant),
        dfinery.DfineryTraffic(),
        impression.ImpressionTraffic(tenant),
    ]
    return {v.source: v for v in vendors}
