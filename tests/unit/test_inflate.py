"""The receiver's bounded gzip/deflate decoder: every form clients send, split anywhere, decoded exactly;
bombs stopped at the limit without any call producing more than the limit; broken streams refused."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.base import Problem, Rejection
from producers.receiver.inflate import Inflater

LIMIT = 64 * 1024
BODY = b'{"clicks": [{"id": "c-1", "opaqueUserId": "u-1"}]}' * 20


def raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


def inflate(encoding: str, data: bytes, chunk: int = 7, limit: int = LIMIT) -> bytes:
    inflater = Inflater(encoding, limit)
    out = b"".join(inflater.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    inflater.finish()
    return out


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        pytest.param("gzip", gzip.compress(BODY), id="gzip"),
        pytest.param("x-gzip", gzip.compress(BODY), id="x-gzip"),
        pytest.param("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:]), id="gzip-two-members"),
        pytest.param("deflate", zlib.compress(BODY), id="deflate-zlib"),
        pytest.param("deflate", raw_deflate(BODY), id="deflate-raw"),
    ],
)
def test_every_form_decodes_exactly(encoding: str, encoded: bytes) -> None:
    assert inflate(encoding, encoded) == BODY
    assert inflate(encoding, encoded, chunk=len(encoded)) == BODY


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=LIMIT),
    encoding=st.sampled_from(["gzip", "deflate"]),
    chunk=st.integers(min_value=1, max_value=70_000),
)
def test_any_body_within_the_limit_round_trips(data: bytes, encoding: str, chunk: int) -> None:
    encoded = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    assert inflate(encoding, encoded, chunk) == data


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_bomb_stops_at_the_limit_and_no_call_yields_more(encoding: str) -> None:
    plain = b" " * (50 * 1024 * 1024)
    bomb = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    inflater = Inflater(encoding, LIMIT)
    produced = 0
    refused: Rejection | None = None
    for i in range(0, len(bomb), 4096):
        try:
            out = inflater.feed(bomb[i : i + 4096])
        except Rejection as exc:
            refused = exc
            break
        assert len(out) <= LIMIT
        produced += len(out)
    assert refused is not None and refused.problem is Problem.TOO_LARGE
    assert produced <= LIMIT


def test_exactly_the_limit_is_accepted() -> None:
    assert inflate("gzip", gzip.compress(b"x" * LIMIT)) == b"x" * LIMIT
    with pytest.raises(Rejection) as refused:
        inflate("gzip", gzip.compress(b"x" * (LIMIT + 1)))
    assert refused.value.problem is Problem.TOO_LARGE


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        pytest.param("gzip", BODY, id="plain-body-labelled-gzip"),
        pytest.param("gzip", gzip.compress(BODY)[:-9], id="gzip-truncated"),
        pytest.param("gzip", gzip.compress(BODY) + b"trailing", id="gzip-trailing-garbage"),
        pytest.param("deflate", zlib.compress(BODY)[:-3], id="deflate-truncated"),
        pytest.param("deflate", zlib.compress(BODY) + b"x", id="deflate-trailing-garbage"),
        pytest.param("deflate", b"\xff" * 40, id="deflate-garbage"),
        pytest.param("gzip", b"", id="empty"),
    ],
)
def test_broken_streams_are_malformed(encoding: str, encoded: bytes) -> None:
    with pytest.raises(Rejection) as refused:
        inflate(encoding, encoded)
    assert refused.value.problem is Problem.MALFORMED
    assert encoding in refused.value.message


def test_only_compressed_encodings() -> None:
    with pytest.raises(ValueError, match="br"):
        Inflater("br", LIMIT)
