"""Training inputs for the gFEX CNNs: files and labels, eta rows, the split and the numpy preprocessing (no TensorFlow)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.errors import InputFileError, UserError, one_line

DATASET = "gTowerEt"
RHO_DATASET = "offlineRho"  # (N,) per-event pile-up density beside gTowerEt (sbt-batch convert)
INPUTS = ("et", "et,et_over_rho")  # --inputs: image channels (ET; ET and ET / rho)
SIGNAL, BACKGROUND = 1, 0
NORMS = ("none", "log1p", "standardize", "max")
NEGATIVES = ("clip", "keep")
SPLIT_NAMES = ("train", "val", "test")


# --------------------------------------------------------------------------- files and labels


@dataclass(frozen=True)
class ImageFile:
    """One input HDF5 file: its path, label, event count and image shape (rows, cols)."""

    path: Path
    label: int
    n: int
    shape: tuple[int, int]


def expand_paths(values: Sequence[str | Path], option: str) -> list[str]:
    """Expand glob patterns and comma lists in file options; a pattern matching nothing is an error."""
    import glob

    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if glob.has_magic(part):
                matches = sorted(glob.glob(part))
                if not matches:
                    raise InputFileError(part, f"{option}: no file matches this pattern")
                out.extend(matches)
            else:
                out.append(part)
    return out


def open_h5(path: Path) -> Any:
    import h5py

    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise InputFileError(path, "not a readable HDF5 file") from None


def open_sources(
    signal: Sequence[str | Path], background: Sequence[str | Path], dataset: str = DATASET
) -> list[ImageFile]:
    """Check the signal and background files and return them as labelled Sources (signal first)."""
    if not signal:
        raise UserError("--signal: no signal files given")
    if not background:
        raise UserError("--background: no background files given")
    sources: list[ImageFile] = []
    for label, paths in ((SIGNAL, signal), (BACKGROUND, background)):
        for p in paths:
            path = Path(p)
            with open_h5(path) as f:
                if dataset not in f:
                    raise InputFileError(path, f"no '{dataset}' dataset (expected an 'sbt-batch convert' output)")
                ds = f[dataset]
                if ds.ndim != 3:
                    raise InputFileError(path, f"'{dataset}' has shape {ds.shape}, expected (events, rows, cols)")
                src = ImageFile(path.absolute(), label, int(ds.shape[0]), (int(ds.shape[1]), int(ds.shape[2])))
            if sources and src.shape != sources[0].shape:
                first = sources[0]
                raise InputFileError(
                    path,
                    f"image shape {src.shape[0]}x{src.shape[1]} differs from "
                    f"{first.shape[0]}x{first.shape[1]} in {first.path}",
                )
            sources.append(src)
    return sources


class EventIndex:
    """Global event numbering over a list of Sources, with labels."""

    def __init__(self, sources: Sequence[ImageFile]) -> None:
        self.sources = list(sources)
        counts = np.array([s.n for s in self.sources], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n = int(self.offsets[-1])
        self.labels = np.concatenate(
            [np.full(s.n, s.label, dtype=np.int32) for s in self.sources] or [np.zeros(0, np.int32)]
        )
        self.shape = self.sources[0].shape if self.sources else (0, 0)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map global ids to (file index, row within the file)."""
        ids = np.asarray(ids, dtype=np.int64)
        f = np.searchsorted(self.offsets, ids, side="right") - 1
        return f, ids - self.offsets[f]


# --------------------------------------------------------------------------- rows


def parse_rows(spec: str | Sequence[int] | None, n_rows: int) -> list[int] | None:
    """Parse ``"a:b"`` (or a list of row numbers) into row indices; None means 'auto'."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return None
    if isinstance(spec, str):
        try:
            if ":" in spec:
                lo_s, hi_s = spec.split(":", 1)
                lo = int(lo_s) if lo_s.strip() else 0
                hi = int(hi_s) if hi_s.strip() else n_rows
                rows = list(range(lo, hi))
            else:
                rows = [int(v) for v in spec.split(",")]
        except ValueError:
            raise UserError(f"--rows: '{spec}' is not of the form START:STOP (for example 0:26)") from None
    else:
        rows = [int(v) for v in spec]
    if not rows:
        raise UserError(f"--rows: '{spec}' selects no rows: dataset is empty after filtering")
    bad = [r for r in rows if r < 0 or r >= n_rows]
    if bad:
        raise UserError(f"--rows: row {bad[0]} is outside the images' {n_rows} rows")
    return rows


@dataclass
class Scan:
    """What one streamed pass over the input files found: rows used anywhere, and events with NaN/inf."""

    rows: list[int]
    nonfinite: np.ndarray  # global ids of events with a NaN or inf tower (sorted)


def scan_sources(sources: Sequence[ImageFile], dataset: str = DATASET, chunk: int = 8192) -> Scan:
    """One streamed pass: the rows non-zero in at least one event, and the events holding NaN or inf."""
    n_rows = sources[0].shape[0]
    used = np.zeros(n_rows, dtype=bool)
    bad: list[np.ndarray] = []
    offset = 0
    for src in sources:
        with open_h5(src.path) as f:
            ds = f[dataset]
            for lo in range(0, src.n, chunk):
                block = read_block(ds, src.path, slice(lo, lo + chunk))
                finite = np.isfinite(block)
                if not finite.all():
                    bad.append(offset + lo + np.flatnonzero(~finite.all(axis=(1, 2))))
                    block = np.where(finite, block, 0.0)
                used |= np.any(block != 0, axis=(0, 2))
        offset += src.n
    rows = [int(r) for r in np.flatnonzero(used)]
    if not rows:
        raise UserError("input files: every row is zero in every event: dataset is empty after filtering")
    return Scan(rows, np.concatenate(bad) if bad else np.zeros(0, np.int64))


def find_nonzero_rows(sources: Sequence[ImageFile], dataset: str = DATASET, chunk: int = 8192) -> list[int]:
    """Rows that are non-zero in at least one event of any file (one streamed pass over the data)."""
    return scan_sources(sources, dataset, chunk).rows


def read_block(ds: Any, path: Path, sel: Any) -> np.ndarray:
    """``ds[sel]`` as float32, a damaged file becoming one InputFileError."""
    try:
        return np.asarray(ds[sel], dtype=np.float32)
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputFileError(path, f"cannot read '{ds.name.lstrip('/')}' (truncated or damaged file: {one_line(exc, 80)})") from None


def nonfinite_error(index: EventIndex, ids: np.ndarray, dataset: str = DATASET) -> InputFileError:
    """The one-line refusal for non-finite events ``ids`` (global): the file and event of the first one."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    files, rows = index.locate(ids[:1])
    path = index.sources[int(files[0])].path
    more = f" ({len(ids)} events in all)" if len(ids) > 1 else ""
    return InputFileError(path, f"NaN or inf in '{dataset}' at event {int(rows[0])}{more}; "
                                "--drop-nonfinite leaves such events out")


def rows_to_spec(rows: Sequence[int]) -> str | list[int]:
    """Write rows compactly: ``"a:b"`` when contiguous, else the list."""
    rows = list(rows)
    if rows == list(range(rows[0], rows[-1] + 1)):
        return f"{rows[0]}:{rows[-1] + 1}"
    return rows


# --------------------------------------------------------------------------- split


def parse_split(spec: str | Sequence[float]) -> tuple[float, float, float]:
    """Parse ``"0.5,0.45,0.05"`` into three fractions that add up to at most 1."""
    try:
        parts = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except (TypeError, ValueError):
        raise UserError(f"--split: '{spec}' is not three comma-separated fractions (train,val,test)") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) > 1 + 1e-6 or parts[0] <= 0:
        raise UserError(f"--split: '{spec}' must be three non-negative fractions train,val,test with sum <= 1")
    return parts[0], parts[1], parts[2]


def make_split(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Shuffle event ids 0..n-1 with ``seed`` and cut them into sorted train/val/test id arrays."""
    perm = np.random.default_rng([seed, 0x5B17]).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    n_test = min(int(round(fractions[2] * n)), n - n_train - n_val)
    cuts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :][:n_test]}
    for name, frac in zip(SPLIT_NAMES, fractions):
        if frac > 0 and len(cuts[name]) == 0:
            raise UserError(f"--split: the {name} set is empty with {n} events: dataset is empty after filtering")
    return {k: np.sort(v).astype(np.int64) for k, v in cuts.items()}


def limit_events(labels: np.ndarray, max_events: int | None, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Ids of at most ``max_events`` events per class (a seeded random subset) not in ``exclude``, sorted."""
    ids = np.arange(len(labels), dtype=np.int64)
    if exclude is not None and len(exclude):
        ids = np.setdiff1d(ids, exclude)
    if max_events is None:
        return ids
    rng = np.random.default_rng([seed, 0xE7])
    keep = []
    for c in (SIGNAL, BACKGROUND):
        cls = ids[labels[ids] == c]
        keep.append(cls if len(cls) <= max_events else rng.choice(cls, max_events, replace=False))
    return np.sort(np.concatenate(keep))


def save_split(path: Path, split: dict[str, np.ndarray], sources: Sequence[ImageFile]) -> None:
    """Write the split (global ids) and the file list they index to ``path`` (npz, atomically)."""
    from sbt_batch.common.fileio import atomic_path

    files = json.dumps([{"path": str(s.path), "label": s.label, "n": s.n} for s in sources])
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        arrays: dict[str, Any] = {"files": np.array(files), **split}
        np.savez(fh, **arrays)


def load_split(path: Path) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Read a split written by :func:`save_split`: (ids per split, file list)."""
    if not Path(path).exists():
        raise InputFileError(path, "split file not found")
    try:
        with np.load(path) as z:
            split = {k: np.asarray(z[k], dtype=np.int64) for k in SPLIT_NAMES if k in z}
            files = json.loads(str(z["files"]))
        if not split or not isinstance(files, list) or not all(isinstance(f, dict) and "path" in f and "label" in f for f in files):
            raise ValueError("no split or file list")
    except Exception as exc:  # zipfile, pickle, json and numpy all raise their own types for a damaged file
        raise InputFileError(path, f"damaged or truncated split file ({type(exc).__name__}); "
                                   "train again into a new run directory") from None
    return split, files


# --------------------------------------------------------------------------- preprocessing


@functools.lru_cache(maxsize=1)
def _viridis_lut() -> np.ndarray:
    from matplotlib import colormaps

    lut = np.ascontiguousarray(colormaps["viridis"](np.arange(256), bytes=True)[:, :3])
    lut.setflags(write=False)  # cached: shared by every call
    return lut


def to_rgb_uint8(x: np.ndarray) -> np.ndarray:
    """Color images (N, R, C) with viridis after per-image min-max scaling, as matplotlib's imsave."""
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    idx = np.clip(((x - lo) / span * 256).astype(np.int64), 0, 255)  # imsave's 256-bin quantization
    return _viridis_lut()[idx]


@dataclass
class Preprocess:
    """Crop rows and normalize raw ET images (MeV); stats for ``standardize`` come from the train split.

    With ``inputs`` 'et,et_over_rho' a second channel holds ET / rho of the event (``offlineRho``),
    normalized on its own (``mean2``/``std2`` for standardize; log1p without the MeV scale; max per image).
    An event with rho <= 0 or not finite (no pile-up estimate) gets an all-zero ET / rho channel (before normalization).
    """

    rows: list[int]
    norm: str = "log1p"
    negative: str = "clip"
    scale: float = 1000.0  # MeV; log1p(ET / scale)
    rgb: bool = False
    mean: float = 0.0
    std: float = 1.0
    inputs: str = "et"
    mean2: float = 0.0  # standardize stats of the ET / rho channel
    std2: float = 1.0

    @property
    def uses_rho(self) -> bool:
        """Whether the input needs each event's rho (the ET / rho channel)."""
        return self.inputs == "et,et_over_rho"

    @property
    def channels(self) -> int:
        """Image channels (1 grey, 3 RGB, 2 for ET and ET / rho)."""
        return 3 if self.rgb else 2 if self.uses_rho else 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's input shape (rows, cols, channels)."""
        return (len(self.rows), 32, self.channels)

    def row_slice(self) -> tuple[slice, np.ndarray | None]:
        """A contiguous slice covering the rows and, if they are not contiguous, the indices inside it."""
        lo, hi = self.rows[0], self.rows[-1] + 1
        inner = None if self.rows == list(range(lo, hi)) else np.asarray(self.rows) - lo
        return slice(lo, hi), inner

    def signed(self, x: np.ndarray) -> np.ndarray:
        """Apply the negative-ET policy to cropped raw images."""
        return np.maximum(x, 0.0) if self.negative == "clip" else x

    def over_rho(self, x: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """Raw ET / rho (N, R, 32) after the negative-ET policy; zero for events whose rho is <= 0 or not finite."""
        rho = np.asarray(rho, dtype=np.float32).reshape(-1, 1, 1)
        ok = np.isfinite(rho) & (rho > 0)
        return np.where(ok, self.signed(np.asarray(x, np.float32)) / np.where(ok, rho, np.float32(1.0)),
                        np.float32(0.0)).astype(np.float32)

    def apply(self, x: np.ndarray, rho: np.ndarray | None = None) -> np.ndarray:
        """Normalize cropped raw images (N, R, 32) into model input (N, R, 32, C) float32 (``rho`` (N,) for ET / rho)."""
        if self.uses_rho:
            if rho is None:
                raise UserError(f"--inputs {self.inputs}: needs the events' '{RHO_DATASET}'")
            ratio = self._normalize(self.over_rho(x, rho), 1.0, self.mean2, self.std2)
            return np.stack([self._normalize(x, self.scale, self.mean, self.std), ratio], axis=-1)
        x = self._normalize(x, self.scale, self.mean, self.std)
        if self.rgb:
            return to_rgb_uint8(x).astype(np.float32) / np.float32(255.0)
        return x[..., None]

    def _normalize(self, x: np.ndarray, scale: float, mean: float, std: float) -> np.ndarray:
        """One channel (N, R, 32): the negative policy, then ``norm`` (log1p(x / scale), standardize, max)."""
        x = np.array(x, dtype=np.float32)  # a private copy, then in-place arithmetic
        if self.negative == "clip":
            np.maximum(x, 0.0, out=x)
        if self.norm == "log1p":
            if self.negative == "clip":
                x *= np.float32(1.0 / scale)
                np.log1p(x, out=x)
            else:
                x = np.sign(x) * np.log1p(np.abs(x) / np.float32(scale))
        elif self.norm == "standardize":
            x -= np.float32(mean)
            x /= np.float32(std)
        elif self.norm == "max":
            m = x.max(axis=(1, 2), keepdims=True)
            x /= np.where(m > 0, m, np.float32(1.0))
        return x.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for config.yaml."""
        d = asdict(self)
        d["rows"] = rows_to_spec(self.rows)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_rows: int = 10**6) -> Preprocess:
        """Inverse of :meth:`to_dict` (runs from before ``inputs`` existed read as ET only)."""
        d = dict(d)
        d["rows"] = parse_rows(d["rows"], n_rows)
        return cls(**d)


def check_inputs(inputs: str, rgb: bool) -> str:
    """The ``--inputs`` value in its canonical form ('et' or 'et,et_over_rho'), or a one-line UserError."""
    canon = ",".join(p.strip() for p in str(inputs).split(",") if p.strip())
    if canon not in INPUTS:
        raise UserError(f"--inputs: unknown inputs '{inputs}' (choose from {', '.join(INPUTS)})")
    if rgb and canon != "et":
        raise UserError(f"--inputs: '{canon}' cannot be combined with --rgb (RGB colours one ET channel)")
    return canon


def check_rho(sources: Sequence[ImageFile]) -> None:
    """Raise an InputFileError for the first file without an (N,) ``offlineRho`` beside its images."""
    for src in sources:
        with open_h5(src.path) as f:
            if RHO_DATASET not in f:
                raise InputFileError(src.path, f"no '{RHO_DATASET}' dataset (needed by --inputs et,et_over_rho)")
            if f[RHO_DATASET].shape != (src.n,):
                raise InputFileError(src.path, f"'{RHO_DATASET}' has shape {f[RHO_DATASET].shape}, expected ({src.n},)")


def check_preprocess_options(norm: str, negative: str) -> None:
    """Raise a UserError for an unknown normalization or negative-ET policy."""
    if norm not in NORMS:
        raise UserError(f"--norm: unknown normalization '{norm}' (choose from {', '.join(NORMS)})")
    if negative not in NEGATIVES:
        raise UserError(f"--negative: unknown policy '{negative}' (choose from {', '.join(NEGATIVES)})")


def shard_contiguous(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous slice of ``indices`` when cut into ``size`` equal parts."""
    per = len(indices) // size
    return indices[rank * per : (rank + 1) * per]
