"""Streaming preprocessed images by event id: HDF5 or memory cache, class balance, epoch order and the tf.data pipeline."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbt_batch.cnn.prepare import BACKGROUND, DATASET, RHO_DATASET, SIGNAL, EventIndex, Preprocess, open_h5, read_block
from sbt_batch.common.errors import InputFileError, UserError

BALANCES = ("weights", "oversample", "none")
CACHES = ("auto", "memory", "stream")
READ_GAP = 64  # rows: ids closer than this in one file are read with one slice
WINDOW_BYTES = 32 * 2**20  # a read/shuffle window holds at most this much (or one batch)


# --------------------------------------------------------------------------- reading


class EventStream:
    """Preprocessed images by global event id, read from HDF5 (streaming) or from a memory cache."""

    def __init__(self, index: EventIndex, prep: Preprocess, dataset: str = DATASET) -> None:
        self.index = index
        self.prep = prep
        self.dataset = dataset
        self._files: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cache_ids: np.ndarray | None = None
        self._cache: np.ndarray | None = None
        self._rho: dict[int, np.ndarray] = {}  # file index -> its whole offlineRho (4 bytes per event)
        self.failure: UserError | None = None  # the last read error (tf.data wraps it)

    def _ds(self, i: int) -> Any:
        with self._lock:
            if i not in self._files:
                self._files[i] = open_h5(self.index.sources[i].path)
            return self._files[i][self.dataset]

    def read_raw(self, ids: np.ndarray) -> np.ndarray:
        """Cropped raw ET (N, R, 32) for ``ids`` in the given order; nearby rows share one read."""
        ids = np.asarray(ids, dtype=np.int64)
        rsl, inner = self.prep.row_slice()
        out = np.empty((len(ids), rsl.stop - rsl.start, self.index.shape[1]), dtype=np.float32)
        files, rows = self.index.locate(ids)
        for fi in np.unique(files):
            sel = np.flatnonzero(files == fi)
            r = rows[sel]
            o = np.argsort(r, kind="stable")
            rs, sel = r[o], sel[o]
            breaks = np.flatnonzero(np.diff(rs) > READ_GAP) + 1
            ds = self._ds(int(fi))
            path = self.index.sources[int(fi)].path
            for part_r, part_s in zip(np.split(rs, breaks), np.split(sel, breaks)):
                lo, hi = int(part_r[0]), int(part_r[-1]) + 1
                block = read_block(ds, path, (slice(lo, hi), rsl))[part_r - lo]
                finite = np.isfinite(block)
                if not finite.all():  # a standardize mean of NaN would train a chance-level model silently
                    first = int(part_r[np.flatnonzero(~finite.all(axis=(1, 2)))[0]])
                    raise InputFileError(path, f"NaN or inf in '{self.dataset}' at event {first}; "
                                               "--drop-nonfinite (train) leaves such events out")
                out[part_s] = block
        return out if inner is None else out[:, inner]

    def read_rho(self, ids: np.ndarray) -> np.ndarray:
        """Each event's rho (``offlineRho``, MeV) for ``ids`` in the given order (a file's rho is read once)."""
        ids = np.asarray(ids, dtype=np.int64)
        files, rows = self.index.locate(ids)
        out = np.empty(len(ids), dtype=np.float32)
        for fi in np.unique(files):
            i = int(fi)
            if i not in self._rho:
                path = self.index.sources[i].path
                self._ds(i)  # opens the file once
                f = self._files[i]
                if RHO_DATASET not in f:
                    raise InputFileError(path, f"no '{RHO_DATASET}' dataset (needed by --inputs {self.prep.inputs})")
                self._rho[i] = read_block(f[RHO_DATASET], path, slice(None)).reshape(-1)
            sel = files == fi
            out[sel] = self._rho[i][rows[sel]]
        return out

    def preprocess(self, ids: np.ndarray) -> np.ndarray:
        """Model input (N, R, 32, C) for ``ids`` read from the files (never the cache)."""
        rho = self.read_rho(ids) if self.prep.uses_rho else None
        return self.prep.apply(self.read_raw(ids), rho)

    def read(self, ids: np.ndarray) -> np.ndarray:
        """Model input (N, R, 32, C) for ``ids``: from the cache when it holds them, else from HDF5."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._cache is not None and self._cache_ids is not None:
            pos = np.searchsorted(self._cache_ids, ids)
            pos = np.minimum(pos, len(self._cache_ids) - 1)
            if np.array_equal(self._cache_ids[pos], ids):
                return self._cache[pos]
        try:
            return self.preprocess(ids)
        except UserError as exc:  # inside tf.data the error arrives wrapped; keep it for the caller
            self.failure = exc
            raise

    def nbytes(self, n_events: int) -> int:
        """Memory that ``n_events`` preprocessed images take."""
        r, c, ch = self.prep.input_shape
        return n_events * r * c * ch * 4

    def load_cache(self, ids: np.ndarray, chunk: int = 8192, show: bool = False) -> None:
        """Read ``ids`` once into memory; later :meth:`read` calls for them never touch the files."""
        from sbt_batch.common.console import progress

        ids = np.unique(np.asarray(ids, dtype=np.int64))
        cache = np.empty((len(ids), *self.prep.input_shape), dtype=np.float32)
        with progress(transient=True) as bar:
            task = bar.add_task("cache", total=len(ids), rate="", visible=show)
            for lo in range(0, len(ids), chunk):
                cache[lo : lo + chunk] = self.preprocess(ids[lo : lo + chunk])
                bar.advance(task, min(chunk, len(ids) - lo))
        self._cache_ids, self._cache = ids, cache

    def close(self) -> None:
        """Close the HDF5 files."""
        for f in self._files.values():
            f.close()
        self._files.clear()


def standardize_ids(ids: np.ndarray, max_events: int = 200_000) -> np.ndarray:
    """The sorted ``ids`` the standardize statistics read: all, or beyond ``max_events`` every k-th block of 1024."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ids) > max_events:
        blocks = np.array_split(ids, -(-len(ids) // 1024))
        ids = np.concatenate(blocks[:: -(-len(blocks) // (max_events // 1024))])
    return ids


def _moments(blocks: Any) -> tuple[float, float]:
    """Mean and std (1.0 when zero) of every value of the float arrays ``blocks``."""
    s = ss = 0.0
    n = 0
    for block in blocks:
        x = np.asarray(block, dtype=np.float64)
        s += float(x.sum())
        ss += float((x * x).sum())
        n += x.size
    mean = s / max(n, 1)
    std = math.sqrt(max(ss / max(n, 1) - mean * mean, 0.0))
    return mean, std if std > 0 else 1.0


def compute_standardize(stream: EventStream, ids: np.ndarray, chunk: int = 8192, max_events: int = 200_000
                        ) -> tuple[float, float]:
    """Mean and std of (negative-policy) cropped ET over ``ids`` (the train split), streamed.

    Beyond ``max_events`` only every k-th block of 1024 neighbouring ids is read, so a huge dataset
    costs a few hundred contiguous reads rather than an extra full pass.
    """
    ids = standardize_ids(ids, max_events)
    return _moments(stream.prep.signed(stream.read_raw(ids[lo : lo + chunk])) for lo in range(0, len(ids), chunk))


def compute_standardize_over_rho(stream: EventStream, ids: np.ndarray, chunk: int = 8192,
                                 max_events: int = 200_000) -> tuple[float, float]:
    """Mean and std of the ET / rho channel (before normalization) over ``ids``, read as :func:`compute_standardize`."""
    ids = standardize_ids(ids, max_events)
    return _moments(stream.prep.over_rho(stream.read_raw(ids[lo : lo + chunk]), stream.read_rho(ids[lo : lo + chunk]))
                    for lo in range(0, len(ids), chunk))


# --------------------------------------------------------------------------- epochs


@dataclass
class Balance:
    """Class balancing: per-class sample weights (``weights``), oversampling, or nothing."""

    mode: str = "weights"
    class_weight: dict[int, float] = field(default_factory=lambda: {0: 1.0, 1: 1.0})

    @classmethod
    def from_labels(cls, mode: str, labels: np.ndarray) -> Balance:
        """Weights n / (2 n_c) for ``weights`` (mean weight 1), else 1."""
        if mode not in BALANCES:
            raise UserError(f"--balance: unknown mode '{mode}' (choose from {', '.join(BALANCES)})")
        if mode != "weights":
            return cls(mode)
        n = len(labels)
        cw = {c: n / (2.0 * max(int(np.sum(labels == c)), 1)) for c in (BACKGROUND, SIGNAL)}
        return cls(mode, cw)

    def epoch_ids(self, ids: np.ndarray, labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """The ids one epoch visits: all of them, plus seeded re-draws of the minority with ``oversample``."""
        if self.mode != "oversample":
            return ids
        sig, bkg = ids[labels[ids] == SIGNAL], ids[labels[ids] == BACKGROUND]
        small, big = (sig, bkg) if len(sig) < len(bkg) else (bkg, sig)
        if len(small) == 0 or len(small) == len(big):
            return ids
        extra = np.random.default_rng([seed, epoch, 0xBA1]).choice(small, len(big) - len(small), replace=True)
        return np.sort(np.concatenate([ids, extra]))

    def weights(self, labels: np.ndarray) -> np.ndarray:
        """Per-event sample weights for ``labels``."""
        return np.where(labels == SIGNAL, self.class_weight[SIGNAL], self.class_weight[BACKGROUND]).astype(np.float32)


def window_events(stream: EventStream, batch_size: int, window_batches: int) -> int:
    """Events per read window (and per shuffle window): whole batches, at most WINDOW_BYTES (or one batch)."""
    return batch_size * max(1, min(window_batches, WINDOW_BYTES // max(stream.nbytes(batch_size), 1)))


def epoch_order(ids: np.ndarray, seed: int, epoch: int, window: int = 8192) -> np.ndarray:
    """Deterministic event order for one epoch: a pure function of (ids, seed, epoch, window).

    The sorted ids are cut into blocks of neighbouring events (``window // 32``, at least 16), the
    blocks are shuffled, and each window of ``window`` events is then permuted. A window therefore
    mixes 32 random regions of the input files while its reads stay 32 contiguous slices.
    """
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    block = max(16, window // 32)
    rng = np.random.default_rng([seed, epoch, 0x0D])
    n = len(ids)
    nb = -(-n // block)
    pos = np.concatenate([np.arange(b * block, min((b + 1) * block, n)) for b in rng.permutation(nb)]) if n else ids
    order = ids[pos]
    for lo in range(0, n, window):
        order[lo : lo + window] = rng.permutation(order[lo : lo + window])
    return order


def make_tf_dataset(
    stream: EventStream,
    order: np.ndarray,
    batch_size: int,
    weights: np.ndarray | None = None,
    window_batches: int = 64,
    parallel: int = 4,
    prefetch: int = 2,
) -> Any:
    """A tf.data pipeline of (x, y, w) batches following ``order`` exactly.

    Windows of :func:`window_events` events are read by ``parallel`` concurrent calls (deterministic
    output order), split into batches and prefetched; memory stays bounded by about
    (parallel + 1) windows + ``prefetch`` batches, whatever the dataset size. When ``order`` comes
    from :func:`epoch_order` with the same window, every window is read as a few contiguous slices.
    """
    from sbt_batch.common.console import import_tensorflow

    tf = import_tensorflow("sbt-batch train")
    order = np.asarray(order, dtype=np.int64)
    labels = stream.index.labels
    window = window_events(stream, batch_size, window_batches)
    n_full = len(order) // batch_size * batch_size
    shape = stream.prep.input_shape

    def load(lo: np.int64, hi: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = order[int(lo) : int(hi)]
        k = max(1, len(ids) // batch_size)
        x = stream.read(ids)
        w = weights[ids].astype(np.float32, copy=False) if weights is not None else np.ones(len(ids), np.float32)
        return x.reshape(k, -1, *shape), labels[ids].astype(np.int32, copy=False).reshape(k, -1), w.reshape(k, -1)

    def tf_load(lo: Any, hi: Any) -> tuple[Any, Any, Any]:
        x, y, w = tf.numpy_function(load, [lo, hi], [tf.float32, tf.int32, tf.float32], stateful=False)
        x.set_shape((None, None, *shape))
        y.set_shape((None, None))
        w.set_shape((None, None))
        return x, y, w

    # windows of whole batches, then (if any) one window holding the last, partial batch
    starts = list(range(0, n_full, window))
    bounds = [(lo, min(lo + window, n_full)) for lo in starts] + ([(n_full, len(order))] if n_full < len(order) else [])
    lo_hi = np.array(bounds, dtype=np.int64).reshape(-1, 2)
    ds = tf.data.Dataset.from_tensor_slices((lo_hi[:, 0], lo_hi[:, 1]))
    ds = ds.map(tf_load, num_parallel_calls=max(1, parallel), deterministic=True).unbatch()
    return ds.prefetch(prefetch)
