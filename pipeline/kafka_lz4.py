"""LZ4 at lz4's fast level for aiokafka's record batches. aiokafka 0.14 compresses every batch with
LZ4 HC at level 9 and takes no level (aio-libs/aiokafka#1028; PR #1121 would make it 1): HC zeroes a
256 KiB context per call, more than the no-op aiohttp request's whole cost at a batch of one record
under callgrind, and takes 20x the fast level's time on a 55 kB batched request. The price is bytes:
frames of single-event batches grow 0.6-2.4 %, those of the bench's (repetitive) batched requests
37-71 % (docs/PERFORMANCE.md, third round). The frame is the same Kafka LZ4 (KIP-57: no block linking,
no content checksum) that every consumer reads; only the compressor's effort differs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import cramjam
from aiokafka import codec

# Levels below lz4's HC minimum (3) are its fast compressor with acceleration 1.
FAST_LEVEL = 1

# The record batch builders of aiokafka 0.14 call the name `lz4_encode` of their own module for each
# batch: the pure Python one and its Cython twin (absent under AIOKAFKA_NO_EXTENSIONS).
_BUILDER_MODULES = ("aiokafka.record.default_records", "aiokafka.record._crecords.default_records")


def lz4_encode_fast(payload: Any) -> bytes:
    compressor = cramjam.lz4.Compressor(level=FAST_LEVEL, content_checksum=False, block_linked=False)
    compressor.compress(payload)
    return bytes(compressor.finish())


def use_fast_lz4() -> None:
    """Make this process's aiokafka record batches use lz4_encode_fast (idempotent). Refuses an aiokafka
    whose builders no longer call codec.lz4_encode by that name, rather than patching nothing."""
    expected: set[Callable[..., bytes]] = {codec.lz4_encode, lz4_encode_fast}
    for name in _BUILDER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # the Cython builders are optional
        if getattr(module, "lz4_encode", None) not in expected:
            raise RuntimeError(f"{name} has no lz4_encode from aiokafka.codec: aiokafka changed")
        module.lz4_encode = lz4_encode_fast  # type: ignore[attr-defined]
