"""aiokafka's record batches with LZ4 at the fast level: the builders (pure Python and Cython) call it,
and what they build is a Kafka LZ4 batch that aiokafka's own reader decodes record for record."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import cramjam
import pytest
from aiokafka.record import default_records
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline import kafka_lz4

CODEC_LZ4 = 3
VALUE = b'{"impressions":[{"id":"a-1","placement":{"path":"/category/shoes"},"occurredAt":"2026-01-01T00:00:00Z"}]}'


def _builders() -> list[Any]:
    found = [default_records._DefaultRecordBatchBuilderPy]
    with contextlib.suppress(ImportError):  # the Cython builders are optional
        found.append(importlib.import_module("aiokafka.record._crecords").DefaultRecordBatchBuilder)
    return found


def _build(builder_cls: Any, records: int) -> bytes:
    builder = builder_cls(
        magic=2,
        compression_type=CODEC_LZ4,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset in range(records):
        builder.append(offset=offset, timestamp=None, key=None, value=VALUE, headers=[("source", b"topsort")])
    return bytes(builder.build())


@pytest.mark.parametrize("builder_cls", _builders(), ids=lambda c: c.__module__)
def test_the_builders_compress_with_the_fast_level_and_the_batch_reads_back(builder_cls: Any) -> None:
    kafka_lz4.use_fast_lz4()
    kafka_lz4.use_fast_lz4()  # idempotent
    calls: list[int] = []
    fast = kafka_lz4.lz4_encode_fast

    def counting(payload: Any) -> bytes:
        calls.append(len(payload))
        return fast(payload)

    module = importlib.import_module(builder_cls.__module__)
    original = module.lz4_encode
    assert original is fast
    module.lz4_encode = counting
    try:
        data = _build(builder_cls, 20)
    finally:
        module.lz4_encode = original
    assert len(calls) == 1
    batch = DefaultRecordBatch(memoryview(bytearray(data)))
    assert batch.compression_type == CODEC_LZ4
    assert [bytes(r.value) for r in batch] == [VALUE] * 20


def test_the_fast_frame_is_standard_lz4() -> None:
    payload = VALUE * 50
    frame = kafka_lz4.lz4_encode_fast(payload)
    assert frame[:4] == b"\x04\x22\x4d\x18"  # the LZ4 frame magic number, as KIP-57 requires
    assert bytes(cramjam.lz4.decompress(frame)) == payload
    assert len(frame) < len(payload) // 10
