"""Bounded decompression of gzip and deflate request bodies, fed as the bytes arrive: no call yields more
than what is left of the size limit, so a compression bomb costs the receiver the limit and no more."""

from __future__ import annotations

import zlib

from pipeline.formats.base import Problem, Rejection

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})


class Inflater:
    """One body's decoder. `feed` returns the decompressed bytes of a chunk; `finish` checks the stream
    ended where it should. Both raise Rejection: TOO_LARGE past `limit` bytes of output, MALFORMED for
    a stream that is not what its Content-Encoding says."""

    def __init__(self, encoding: str, limit: int) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"not a compressed encoding: {encoding!r}")
        self._gzip = encoding != "deflate"
        self._limit = limit
        self._size = 0
        self._decoder: zlib._Decompress | None = None

    def _new_decoder(self, first_byte: int) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        # "deflate" is the zlib format (RFC 9110), but some clients send raw deflate: a zlib stream's
        # first byte names method 8 in its low bits.
        zlib_wrapped = first_byte & 0x0F == 8
        return zlib.decompressobj(wbits=zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        pending = chunk
        while pending:
            if self._decoder is None:
                self._decoder = self._new_decoder(pending[0])
            decoder = self._decoder
            try:
                # one byte beyond what the limit allows: enough to know it is exceeded
                data = decoder.decompress(pending, self._limit - self._size + 1)
            except zlib.error as exc:
                raise self._malformed() from exc
            self._size += len(data)
            if self._size > self._limit:
                raise Rejection(Problem.TOO_LARGE, f"body is above the limit of {self._limit} bytes")
            out.append(data)
            if decoder.unconsumed_tail:
                pending = decoder.unconsumed_tail
            elif decoder.eof and decoder.unused_data:
                if not self._gzip:
                    raise self._malformed()
                pending = decoder.unused_data  # the next member of a multi-member gzip body
                self._decoder = None
            else:
                pending = b""
        return b"".join(out)

    def finish(self) -> None:
        if self._decoder is None or not self._decoder.eof:
            raise self._malformed()

    def _malformed(self) -> Rejection:
        encoding = "gzip" if self._gzip else "deflate"
        return Rejection(Problem.MALFORMED, f"body could not be read as Content-Encoding {encoding}")
