"""Whole HDF5 chunks encoded here and written raw: HDF5's own shuffle + deflate format, made cheaper.

HDF5's shuffle filter stores a chunk of 4-byte floats as four byte planes (all first bytes, then all
second bytes, ...), and deflate compresses the result as one zlib stream. For calorimeter energies
only the top plane (sign and exponent) compresses; the three mantissa planes are noise, on which
deflate spends most of its time to save nothing. :class:`ShuffleDeflate` therefore deflates the
planes that pay and emits the others as deflate *stored* blocks: the result is one standard zlib
stream, read back by any HDF5 library (h5py, ROOT, C, Julia) with the usual filters. The planes are
taken straight from the input's byte order, so big-endian ROOT baskets need no byteswap pass.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import numpy as np

ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, fastest level (CMF/FLG with a valid check)
FINAL_EMPTY_BLOCK = b"\x01\x00\x00\xff\xff"  # a final, empty stored block: ends the deflate stream
STORED_MAX = 0xFFFF  # bytes per stored block
PAYS = 0.95  # a plane is deflated when that saves at least 5 %
PROBE_EVERY = 64  # chunks between re-checks of which planes pay


def _zlib():
    """ISA-L's zlib module when installed (same format, several times faster), else the standard one."""
    import zlib

    from sbt_batch.common.optional import try_import

    return try_import("isal.isal_zlib") or zlib  # isal is a dependency; zlib only on a partial install


def stored_blocks(data: memoryview) -> list[bytes | memoryview]:
    """``data`` as non-final deflate stored blocks (the stream must be at a byte boundary)."""
    pieces: list[bytes | memoryview] = []
    for start in range(0, len(data), STORED_MAX):
        block = data[start : start + STORED_MAX]
        size = len(block)
        pieces += [bytes((0, size & 0xFF, size >> 8, ~size & 0xFF, (~size >> 8) & 0xFF)), block]
    return pieces


class ShuffleDeflate:
    """Encode chunks of 4-byte items as HDF5 shuffle + deflate chunks, storing the planes that do not compress."""

    def __init__(self, level: int = 1) -> None:
        self.level = level
        self.zlib = _zlib()
        self.pays = [True] * 4
        self.chunks = 0

    def planes(self, chunk: np.ndarray) -> np.ndarray:
        """The four byte planes (least significant first) of a 4-byte chunk in either byte order."""
        import numpy as np

        words = np.ascontiguousarray(chunk).reshape(-1).view(np.uint32)
        swapped = (chunk.dtype.byteorder == ">") == (sys.byteorder == "little")
        out = np.empty((4, words.size), dtype=np.uint8)
        for k in range(4):
            out[k] = words >> (8 * (3 - k) if swapped else 8 * k)  # the assignment keeps the low byte
        return out

    def encode(self, chunk: np.ndarray) -> bytes:
        """One chunk (any shape of 4-byte items) as the bytes HDF5 stores for shuffle + deflate."""
        planes = self.planes(chunk)
        probe = self.chunks % PROBE_EVERY == 0
        self.chunks += 1
        z = self.zlib
        pieces: list[bytes | memoryview] = [ZLIB_HEADER]
        check = 1
        for k in range(4):
            plane = memoryview(planes[k])
            check = z.adler32(plane, check)
            if self.pays[k] or probe:
                comp = z.compressobj(self.level, z.DEFLATED, -15)
                packed = comp.compress(plane) + comp.flush(z.Z_SYNC_FLUSH)  # ends on a byte boundary
                if probe:
                    self.pays[k] = len(packed) < PAYS * len(plane)
                if len(packed) < len(plane):
                    pieces.append(packed)
                    continue
            pieces += stored_blocks(plane)
        pieces += [FINAL_EMPTY_BLOCK, check.to_bytes(4, "big")]
        return b"".join(pieces)


class RawChunks:
    """Chunks of an unfiltered dataset: the items' little-endian bytes (for measurements without compression)."""

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """The chunk's bytes as a flat uint8 array."""
        import numpy as np

        return np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)


def chunk_encoder(level: int | None) -> ShuffleDeflate | RawChunks:
    """The encoder for chunks deflated at ``level`` (None: no filter)."""
    return ShuffleDeflate(level) if level else RawChunks()


def decode_chunk(data: np.ndarray | bytes, ds: h5py.Dataset) -> np.ndarray:
    """The events of one whole chunk of ``ds`` from its stored bytes (shuffle + deflate, or no filter)."""
    import numpy as np

    if ds.compression == "gzip":
        raw = np.frombuffer(_zlib().decompress(data), dtype=np.uint8)
        if ds.shuffle:
            raw = np.ascontiguousarray(raw.reshape(ds.dtype.itemsize, -1).T)
        return raw.view(ds.dtype).reshape(ds.chunks)
    return np.frombuffer(data, dtype=ds.dtype).reshape(ds.chunks)


class EventWriter:
    """Write event blocks into a chunked dataset; whole chunks are encoded here and written raw.

    A chunk that a block leaves unfinished is kept here and completed by the next contiguous block,
    so a stream of blocks (file after file) never hands HDF5 a partial chunk to compress and
    recompress. Call :meth:`flush` when done (a partial chunk then goes through HDF5).
    """

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        self.c = ds.chunks[0]
        deflated = ds.compression == "gzip" and ds.shuffle
        self.raw = (
            (deflated or (ds.compression is None and not ds.shuffle)) and not ds.fletcher32 and ds.scaleoffset is None
            and ds.dtype.itemsize == 4 and ds.dtype.byteorder in "=<|" and sys.byteorder == "little"
        )  # fmt: skip
        self.encoder = chunk_encoder(int(ds.compression_opts or 1) if deflated else None)
        self.raw_chunks = 0
        self.pending: np.ndarray | None = None  # the chunk being filled
        self.chunk_at = self.fill_from = self.fill_to = 0  # its first event; the events [from, to) it holds

    def _write_raw(self, at: int, chunks: np.ndarray) -> None:
        """Write whole chunks (k, c, ...) starting at event ``at`` (a chunk boundary)."""
        tail = (0,) * (self.ds.ndim - 1)
        for i in range(chunks.shape[0]):
            self.ds.id.write_direct_chunk((at + i * self.c, *tail), self.encoder.encode(chunks[i]), 0)
        self.raw_chunks += chunks.shape[0]

    def write(self, at: int, block: np.ndarray) -> None:
        """Write ``block`` (n, ...) of 4-byte floats in either byte order at events [at, at+n)."""
        import numpy as np

        n, c = len(block), self.c
        if not self.raw:
            self.ds[at : at + n] = block
            return
        pos = 0
        while pos < n:
            here = at + pos
            if self.pending is not None and self.fill_to < c and here == self.chunk_at + self.fill_to:
                k = min(n - pos, c - self.fill_to)
                self.pending[self.fill_to : self.fill_to + k] = block[pos : pos + k]
                self.fill_to += k
                pos += k
                if self.fill_to == c:
                    self.flush()
                continue
            self.flush()  # a chunk left unfinished elsewhere
            if here % c == 0 and n - pos >= c:
                full = (n - pos) // c
                self._write_raw(here, np.ascontiguousarray(block[pos : pos + full * c]).reshape(full, c, *block.shape[1:]))
                pos += full * c
                continue
            if self.pending is None:
                self.pending = np.zeros((c, *block.shape[1:]), dtype=self.ds.dtype)
            self.chunk_at, self.fill_from = here - here % c, here % c
            self.fill_to = self.fill_from

    def flush(self) -> None:
        """Write the chunk being filled: raw when it is whole or the dataset's zero-padded edge, else through HDF5."""
        if self.pending is None or self.fill_to == self.fill_from:
            return
        whole = self.fill_from == 0 and (self.fill_to == self.c or self.chunk_at + self.fill_to == self.ds.shape[0])
        if whole:
            self.pending[self.fill_to :] = 0
            self._write_raw(self.chunk_at, self.pending[None])
        else:  # HDF5 merges it with what the chunk already holds
            self.ds[self.chunk_at + self.fill_from : self.chunk_at + self.fill_to] = self.pending[self.fill_from : self.fill_to]
        self.fill_from = self.fill_to = 0


def same_layout(a: h5py.Dataset, b: h5py.Dataset) -> bool:
    """True when two datasets share chunking, type and filters (their chunks can be copied as bytes)."""
    return (
        a.chunks == b.chunks
        and a.dtype == b.dtype
        and a.compression == b.compression
        and a.compression_opts == b.compression_opts
        and a.shuffle == b.shuffle
        and a.fletcher32 == b.fletcher32
        and a.scaleoffset == b.scaleoffset
    )


def copy_events(src: h5py.Dataset, src_start: int, n: int, dst: h5py.Dataset, dst_start: int, step: int = 4096, writer: EventWriter | None = None) -> int:
    """Copy events [src_start, src_start+n) of ``src`` to ``dst`` at ``dst_start``; return the chunks copied raw.

    When both datasets share chunking and filters and their chunk grids line up, whole chunks are
    copied as compressed bytes (no recompression); the rest goes through normal reads and writes.
    """
    if n <= 0:
        return 0
    c = src.chunks[0] if src.chunks else 0
    aligned = bool(c) and same_layout(src, dst) and (dst_start - src_start) % c == 0
    raw = 0
    pos = src_start
    stop = src_start + n
    shift = dst_start - src_start
    tail = (0,) * (src.ndim - 1)
    while pos < stop:
        if aligned and pos % c == 0 and (pos + c <= stop or stop == src.shape[0]):
            # run of chunks that start on a chunk boundary; the last may be the source's edge chunk
            end = stop if stop == src.shape[0] else pos + (stop - pos) // c * c
            for k in range(pos, end, c):
                mask, data = src.id.read_direct_chunk((k, *tail))
                dst.id.write_direct_chunk((k + shift, *tail), data, mask)
                raw += 1
            pos = end
            continue
        # up to the next chunk boundary (or a bounded step when not aligned)
        nxt = min(stop, (pos // c + 1) * c) if aligned else min(stop, pos + step)
        if writer is not None:
            writer.write(pos + shift, src[pos:nxt])
        else:
            dst[pos + shift : nxt + shift] = src[pos:nxt]
        pos = nxt
    if writer is not None:
        writer.flush()
    return raw
