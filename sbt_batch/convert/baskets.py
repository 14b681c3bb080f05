"""Fast path for the tower branches of a TTree: gather towers straight from uproot's baskets.

uproot's ``arrays(library="np")`` turns every basket into native-endian arrays and concatenates
them (for ``std::vector<float>`` it also builds offsets and strips every entry's header), then
:mod:`sbt_batch.convert.source` would gather the grid's towers: several passes over all towers. Here each
basket that uproot reads and decompresses is gathered once, still big-endian, into a step buffer
of only the grid's towers (the HDF5 chunk encoder reads either byte order). Memory stays at one
step buffer plus one basket.

Two stored layouts take this path, described by :class:`Layout`:

- a fixed-size array (``float[N]``): a basket is an (entries, N) array;
- ``std::vector<float>`` or ``ROOT::VecOps::RVec<float>`` (uproot's ``AsJagged(AsDtype('>f4'),
  header_bytes=10)``), or a counted ``float[n]`` (no header): every entry is a header and then its
  floats, so once every entry has N floats (checked at once from the basket's entry offsets) the
  basket is a strided (entries, header + 4N bytes) array.

An entry of another length is a :class:`TowerCountError`, unless ``pad`` is set (root_numpy's
``(branch, 0, N)``: short entries padded with 0, long ones truncated; only the baskets that hold
such entries are read entry by entry). A NaN or infinity among the gathered towers is a
:class:`NonFiniteError`. Anything else (RNTuple, fixed arrays of other types) goes through uproot's
``iterate`` in :mod:`sbt_batch.convert.source`.
"""

from __future__ import annotations

import functools
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


_KEY = struct.Struct(">ihiIhh")  # a basket's TKey: fNbytes, version, fObjlen, fDatime, fKeylen, fCycle
_TBASKET = struct.Struct(">Hiiii")  # the key's last 19 bytes: fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast (then a flag byte)
_LOCAL = threading.local()  # one step buffer per thread, reused from file to file (no page faults per file)
GATHER_ROWS = 256  # entries gathered per np.take: the block stays in cache for the finiteness check


class LayoutError(ValueError):
    """The branch does not store one 4-byte float per tower (the message says what it stores)."""


class TowerCountError(ValueError):
    """An entry holds another number of towers than the maps (``entry`` counts from the tree's start)."""

    def __init__(self, entry: int, length: int, expected: int) -> None:
        super().__init__(f"entry {entry} has {length} towers but the maps have {expected}")
        self.entry, self.length, self.expected = entry, length, expected


class NonFiniteError(ValueError):
    """A value of entry ``entry`` (a gathered tower, or rho) is NaN or infinite."""

    def __init__(self, entry: int) -> None:
        super().__init__(f"entry {entry} has a NaN or infinite value")
        self.entry = entry


@dataclass(frozen=True)
class Layout:
    """How a TTree branch stores its floats: fixed ``items`` per entry, or a variable count after ``header`` bytes."""

    dtype: np.dtype  # the stored 4-byte float (big-endian in ROOT files)
    items: int | None  # floats per entry of a fixed-size array; None when each entry has its own length
    header: int = 0  # bytes before each variable-length entry's floats (10 for std::vector and RVec)

    @property
    def variable(self) -> bool:
        """True for std::vector / RVec / counted arrays (each entry carries its length)."""
        return self.items is None


def _float4(dtype: Any) -> bool:
    return dtype.kind == "f" and dtype.itemsize == 4


def tower_layout(branch: Any) -> Layout | None:
    """The branch's :class:`Layout`; None when only uproot's generic read covers it; LayoutError when nothing does."""
    interp = branch.interpretation
    kind = type(interp).__name__
    typename = getattr(branch, "typename", "") or str(interp)
    if kind == "AsDtype":
        from_dtype = interp.from_dtype
        if from_dtype.shape == ():
            raise LayoutError(f"is a single {typename} per entry, not one value per tower")
        if len(from_dtype.shape) != 1:
            raise LayoutError(f"is a {typename} array of shape {from_dtype.shape}, not one value per tower")
        return Layout(from_dtype.base, from_dtype.shape[0]) if _float4(from_dtype.base) else None
    if kind == "AsJagged":
        content = interp.content
        from_dtype = getattr(content, "from_dtype", None)
        if type(content).__name__ == "AsDtype" and from_dtype is not None and from_dtype.shape == () and _float4(from_dtype):
            return Layout(from_dtype, None, int(interp.header_bytes))
        raise LayoutError(f"is {typename}; expected float towers (std::vector<float>, RVec<float> or float[N])")
    raise LayoutError(f"is {typename}, which is not float towers (std::vector<float>, RVec<float> or float[N])")


def step_buffer(rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    """A (rows, cols) array of ``dtype`` that this thread reuses; its content is whatever was there."""
    import numpy as np

    buffer = getattr(_LOCAL, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.shape[1] != cols or buffer.shape[0] < rows:
        buffer = _LOCAL.buffer = np.empty((rows, cols), dtype=dtype)
    return buffer[:rows]


def first_nonfinite(block: np.ndarray) -> int | None:
    """Row of the first NaN or infinity in a numeric block of either byte order; None when all are finite."""
    import numpy as np

    if block.dtype.kind != "f" or block.dtype.itemsize != 4:  # float32 is the hot case; others are rho or rare
        finite = np.isfinite(block) if block.dtype.kind == "f" else np.ones(block.shape, bool)
        rows = finite.all(axis=-1) if finite.ndim > 1 else finite
        return None if rows.all() else int(np.argmin(rows))
    bits = np.ascontiguousarray(block).view(np.uint32)
    mask = np.uint32(0x7F800000)  # the exponent field, as this machine reads the stored bytes
    if not block.dtype.isnative:
        mask = mask.byteswap()
    exponent = np.bitwise_and(bits, mask)
    if exponent.size == 0 or exponent.max() != mask:  # every exponent bit set: NaN or infinity
        return None
    return int(np.flatnonzero((exponent == mask).any(axis=-1) if exponent.ndim > 1 else exponent == mask)[0])


class _Basket:
    """A basket as :func:`read_basket` reads it: ``data`` (its entries' bytes) and, for variable-length entries, ROOT's stored entry offsets."""

    __slots__ = ("data", "_tail", "_keylen")

    def __init__(self, data: np.ndarray, tail: np.ndarray | None, keylen: int) -> None:
        self.data, self._tail, self._keylen = data, tail, keylen

    @property
    def byte_offsets(self) -> np.ndarray | None:
        """(entries + 1,) offsets of the entries in ``data`` (as uproot's TBasket.byte_offsets); None for fixed-size entries."""
        if self._tail is None:
            return None
        offsets = self._tail.view(">i4")[1:] - self._keylen  # stored as offsets in the key + basket record
        offsets[-1] = self.data.size
        return offsets

    def uniform(self, n: int, width: int) -> bool:
        """True when the basket holds ``n`` entries of ``width`` bytes each (one comparison of the stored offsets' bytes)."""
        tail = self._tail
        return (tail is not None and self.data.size == n * width and len(tail) >= 4 * (n + 1)
                and tail[4 : 4 + 4 * n].tobytes() == _key_offsets(n, width, self._keylen))  # fmt: skip


@functools.lru_cache(maxsize=256)
def _key_offsets(n: int, width: int, keylen: int) -> bytes:
    """The stored (big-endian, from the key's start) offsets of ``n`` entries of ``width`` bytes each."""
    import numpy as np

    return (np.arange(n, dtype=np.int64) * width + keylen).astype(">i4").tobytes()


def read_basket(source: Any, seek: int, size: int, number: int) -> _Basket:
    """The normal (free) basket ``number`` stored at ``seek`` (``size`` bytes with its key) in the file of ``source``, without uproot's TBasket model.

    uproot's generic model costs as much per basket as a small basket's inflate (more for a
    ``std::vector`` branch, whose entry offsets it converts). Here the TKey and TBasket header are
    parsed with two struct reads; the data is inflated by ``uproot.compression.decompress`` (every
    codec, any number of ROOT compression frames, the inflater ``use_fast_inflate`` chose) or, when
    stored uncompressed, copied off the file's memory map as uproot does.
    """
    import numpy as np
    import uproot.compression
    from uproot.source.cursor import Cursor

    chunk = source.chunk(seek, seek + size)
    raw = chunk.raw_data
    if not isinstance(raw, np.ndarray):
        raw = np.frombuffer(raw, dtype=np.uint8)
    nbytes, _, objlen, _, keylen, _ = _KEY.unpack_from(raw, 0)
    _, _, _, _, last = _TBASKET.unpack_from(raw, keylen - _TBASKET.size - 1)
    border = last - keylen
    if not keylen < nbytes <= len(raw) or not 0 <= border <= objlen:
        raise ValueError(f"basket {number} has a corrupt header (fNbytes {nbytes}, fObjlen {objlen}, fKeylen {keylen}, fLast {last})")
    if nbytes - keylen == objlen:
        out = np.array(raw[keylen:nbytes])  # stored uncompressed: a copy, so nothing points into the map once the file closes
    else:
        out = uproot.compression.decompress(chunk, Cursor(seek + keylen), {}, nbytes - keylen, objlen).raw_data
    return _Basket(out[:border], out[border:] if border != objlen else None, keylen)


def _fixed_rows(basket: Any, layout: Layout, n: int, number: int) -> np.ndarray:
    """A fixed-size array basket as an (n, items) array of the stored dtype."""
    if layout.items is None:
        raise ValueError(f"basket {number}: a variable-length layout has no fixed rows")
    size = n * layout.items * layout.dtype.itemsize
    if basket.byte_offsets is not None or basket.data.size != size:
        raise ValueError(f"basket {number} holds {basket.data.size} bytes for {n} entries of {layout.items} items")
    return basket.data.view(layout.dtype).reshape(n, layout.items)


@functools.lru_cache(maxsize=256)
def _uniform_offsets(n: int, width: int, dtype: str) -> bytes:
    """The bytes of the entry offsets of ``n`` entries of ``width`` bytes each, in ``dtype``."""
    import numpy as np

    return (np.arange(n + 1, dtype=np.int64) * width).astype(dtype).tobytes()


def _variable_rows(basket: Any, layout: Layout, n: int, lo: int, hi: int, n_towers: int, pad: bool, number: int, start: int) -> tuple[np.ndarray, int]:
    """Entries [lo, hi) of a variable-length basket of ``n`` entries as (hi - lo, n_towers) rows, and how many were padded.

    When every entry holds ``n_towers`` floats (one comparison of the entry offsets with those of a
    uniform basket), the rows are a strided view of the basket; otherwise the entries are checked
    one by one: TowerCountError (entry counted from the tree's start), or with ``pad`` a padded copy.
    """
    import numpy as np

    width = layout.header + n_towers * layout.dtype.itemsize
    if _uniform(basket, n, width):
        return _strided(basket.data, layout, lo * width, hi - lo, n_towers), 0
    offsets, counts = _entry_sizes(basket, layout, n, number)
    wrong = np.flatnonzero(counts[lo:hi] != n_towers)
    if not len(wrong):
        return _strided_rows(basket, layout, offsets, lo, hi, n_towers), 0
    if not pad:
        first = lo + int(wrong[0])
        raise TowerCountError(start + first, int(counts[first]), n_towers)
    return _padded_rows(basket, layout, offsets, counts, lo, hi, n_towers), len(wrong)


def _uniform(basket: Any, n: int, width: int) -> bool:
    """True when every one of the basket's ``n`` entries is ``width`` bytes long."""
    if isinstance(basket, _Basket):
        return basket.uniform(n, width)
    offsets = basket.byte_offsets  # an embedded basket (uproot's model)
    return offsets is not None and offsets.tobytes() == _uniform_offsets(n, width, offsets.dtype.str)


def _entry_sizes(basket: Any, layout: Layout, n: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(byte offsets (n + 1,), float counts (n,)) of a variable-length basket's entries; ValueError when corrupt."""
    import numpy as np

    offsets = basket.byte_offsets
    if offsets is None or len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != basket.data.size:
        raise ValueError(f"basket {number} has no valid entry offsets for {n} entries")
    body = np.diff(offsets) - layout.header
    if body.min(initial=0) < 0 or np.any(body % layout.dtype.itemsize):
        raise ValueError(f"basket {number} has entries that are not {layout.header} header bytes plus floats")
    return offsets, body // layout.dtype.itemsize


def _strided_rows(basket: Any, layout: Layout, offsets: np.ndarray, lo: int, hi: int, items: int) -> np.ndarray:
    """Entries [lo, hi) of a variable-length basket whose entries all hold ``items`` floats, as an (hi - lo, items) view."""
    return _strided(basket.data, layout, int(offsets[lo]), hi - lo, items)


def _strided(data: np.ndarray, layout: Layout, at: int, n: int, items: int) -> np.ndarray:
    """``n`` entries of ``items`` floats from byte ``at`` of a basket's data, as an (n, items) view (rows are header + 4 x items bytes apart)."""
    import numpy as np

    itemsize = layout.dtype.itemsize
    return np.ndarray((n, items), layout.dtype, buffer=data, offset=at + layout.header, strides=(layout.header + items * itemsize, itemsize))


def _padded_rows(basket: Any, layout: Layout, offsets: np.ndarray, counts: np.ndarray, lo: int, hi: int, n_towers: int) -> np.ndarray:
    """Entries [lo, hi) zero-padded or truncated to ``n_towers`` floats, one entry at a time."""
    import numpy as np

    rows = np.zeros((hi - lo, n_towers), dtype=layout.dtype)
    data = basket.data
    for i in range(lo, hi):
        k = min(int(counts[i]), n_towers)
        start = int(offsets[i]) + layout.header
        rows[i - lo, :k] = data[start : start + k * layout.dtype.itemsize].view(layout.dtype)
    return rows


def iter_gathered(
    branch: Any,
    layout: Layout,
    index: np.ndarray,
    step: int,
    entry_start: int = 0,
    entry_stop: int | None = None,
    *,
    n_towers: int,
    pad: bool = False,
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (block (n, len(index)) in stored byte order, events padded or truncated in it) for entries [entry_start, entry_stop).

    ``n_towers`` is the maps' tower count that every entry must hold (``pad``: pad or truncate to it).
    Each block is a view of one reused buffer: use it before asking for the next. Raises
    TowerCountError, NonFiniteError, or ValueError for a basket that does not match the branch's type.
    """
    import numpy as np

    buffer = step_buffer(step, len(index), layout.dtype)
    end = branch.num_entries if entry_stop is None else min(entry_stop, branch.num_entries)
    short = np.flatnonzero(index >= layout.items) if layout.items is not None and layout.items < n_towers else None
    filled = checked = padded = 0
    # the basket table once, not uproot's per-basket lookups (a TBranchElement looks each member up in its bases)
    bounds = [int(x) for x in branch.entry_offsets]  # entry boundaries of all baskets, embedded ones included
    n_free = branch.num_baskets - len(branch.embedded_baskets)
    seeks, sizes = branch.member("fBasketSeek")[:n_free].tolist(), branch.member("fBasketBytes")[:n_free].tolist()
    source = branch.file.source
    for number in range(branch.num_baskets):
        start, stop = bounds[number], bounds[number + 1]
        if stop <= entry_start:
            continue
        if start >= end:
            break
        basket = read_basket(source, seeks[number], sizes[number], number) if number < n_free else branch.basket(number)
        lo, hi = max(0, entry_start - start), min(stop, end) - start
        if not layout.variable:
            rows = _fixed_rows(basket, layout, stop - start, number)[lo:hi]
            if layout.items != n_towers:  # only with pad: scan_input refuses it otherwise
                padded += hi - lo
        else:
            rows, n_padded = _variable_rows(basket, layout, stop - start, lo, hi, n_towers, pad, number, start)
            padded += n_padded
        at = start + lo  # the tree entry of rows[0]
        while len(rows):
            k = min(len(rows), step - filled, GATHER_ROWS)
            out = buffer[filled : filled + k]
            np.take(rows[:k], index, axis=1, out=out, mode="clip")
            if short is not None:
                out[:, short] = 0  # towers beyond a short fixed array (pad)
            filled += k
            at += k
            rows = rows[k:]
            if filled - checked >= GATHER_ROWS or filled == step:  # check while the rows are in cache, a few baskets at once
                _check_finite(buffer, checked, filled, at)
                checked = filled
            if filled == step:
                yield buffer, padded
                filled = checked = padded = 0
    if filled:
        _check_finite(buffer, checked, filled, at)
        yield buffer[:filled], padded


def _check_finite(buffer: np.ndarray, lo: int, hi: int, at_hi: int) -> None:
    """NonFiniteError unless buffer[lo:hi] is finite (``at_hi``: the tree entry after row hi - 1)."""
    bad = first_nonfinite(buffer[lo:hi])
    if bad is not None:
        raise NonFiniteError(at_hi - (hi - lo) + bad)
