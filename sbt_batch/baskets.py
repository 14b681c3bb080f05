"""Fast path for fixed-size array branches of a TTree: gather towers straight from uproot's baskets.

uproot's ``arrays(library="np")`` turns every basket into native-endian arrays and concatenates
them, then :mod:`sbt_batch.convert` would gather the grid's towers: three passes over all towers.
Here each basket that uproot reads and decompresses is gathered once, still big-endian, into a
step buffer of only the grid's towers (the HDF5 chunk encoder reads either byte order). Memory
stays at one step buffer plus one basket. Anything this path does not cover (RNTuple, jagged
baskets, other types) goes through uproot's ``iterate``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


_LOCAL = threading.local()  # one step buffer per thread, reused from file to file (no page faults per file)


def step_buffer(rows: int, cols: int, dtype: "np.dtype") -> "np.ndarray":
    """A (rows, cols) array of ``dtype`` that this thread reuses; its content is whatever was there."""
    import numpy as np

    buffer = getattr(_LOCAL, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.shape[1] != cols or buffer.shape[0] < rows:
        buffer = _LOCAL.buffer = np.empty((rows, cols), dtype=dtype)
    return buffer[:rows]


def basket_dtype(branch: Any, n_items: int) -> "np.dtype | None":
    """The stored item dtype when ``branch`` holds ``n_items`` 4-byte floats per entry in plain baskets, else None."""
    interp = branch.interpretation
    from_dtype = getattr(interp, "from_dtype", None)
    if type(interp).__name__ != "AsDtype" or from_dtype is None or from_dtype.shape != (n_items,):
        return None
    base = from_dtype.base
    return base if base.kind == "f" and base.itemsize == 4 else None


def iter_gathered(branch: Any, index: "np.ndarray", step: int, entry_start: int = 0, entry_stop: int | None = None) -> Iterator["np.ndarray"]:
    """Yield (n, len(index)) blocks of ``branch`` entries [entry_start, entry_stop) in stored byte order, ``step`` at most.

    Each block is a view of one reused buffer: use it before asking for the next. Raises ValueError
    when a basket's size does not match the branch's type (the caller reports the file).
    """
    import numpy as np

    n_items = branch.interpretation.from_dtype.shape[0]
    dtype = branch.interpretation.from_dtype.base
    buffer = step_buffer(step, len(index), dtype)
    end = branch.num_entries if entry_stop is None else min(entry_stop, branch.num_entries)
    filled = 0
    for number in range(branch.num_baskets):
        start, stop = (int(x) for x in branch.basket_entry_start_stop(number))
        if stop <= entry_start:
            continue
        if start >= end:
            break
        basket = branch.basket(number)
        if basket.byte_offsets is not None or basket.data.size != (stop - start) * n_items * dtype.itemsize:
            raise ValueError(f"basket {number} holds {basket.data.size} bytes for {stop - start} entries of {n_items} items")
        rows = basket.data.view(dtype).reshape(stop - start, n_items)[max(0, entry_start - start) : end - start]
        while len(rows):
            k = min(len(rows), step - filled)
            np.take(rows[:k], index, axis=1, out=buffer[filled : filled + k], mode="clip")
            filled += k
            rows = rows[k:]
            if filled == step:
                yield buffer
                filled = 0
    if filled:
        yield buffer[:filled]
