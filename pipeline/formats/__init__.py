"""The four vendor APIs: one module each, with its Structs, decoders built once, a pure
`to_canonical`, and its reply shapes. The route chooses the vendor, never payload sniffing."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.formats.base import VendorFormat


def all_formats() -> Mapping[str, VendorFormat]:
    from pipeline.formats import dfinery, impression, retailrocket, topsort

    formats: list[VendorFormat] = [topsort.FORMAT, retailrocket.FORMAT, dfinery.FORMAT, impression.FORMAT]
    return {f.source: f for f in formats}
