"""Tabular inputs from CSV, HDF5 or a ROOT tree: reading, validation, writing and a seeded split.

Weights: ``training_weight`` is what the network trains with (see :func:`training_weights` for how
negative values are handled); the physics weight used for the sensitivity and the plots is
``EventWeight * post_fit_weight``, negative values kept with their sign.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import atomic_path
from sbt_batch.tabular.columns import Columns

CSV_SUFFIXES = {".csv"}
HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf"}
ROOT_SUFFIXES = {".root"}
NEGATIVE_WEIGHT_MODES = ("abs", "zero", "keep")


@dataclass
class Table:
    """Events as arrays: variables ``x`` (n, k), class ``y`` (0/1) and weights."""

    x: np.ndarray
    y: np.ndarray
    training_weight: np.ndarray
    event_weight: np.ndarray
    post_fit_weight: np.ndarray
    sample: np.ndarray
    variables: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def physics_weight(self) -> np.ndarray:
        """EventWeight * post_fit_weight (signed)."""
        return self.event_weight * self.post_fit_weight

    def subset(self, index: np.ndarray, source: str | None = None) -> Table:
        """The events at ``index``."""
        return Table(
            self.x[index], self.y[index], self.training_weight[index], self.event_weight[index],
            self.post_fit_weight[index], self.sample[index], list(self.variables), source or self.source,
        )

    def scaled_physics(self, factor: float) -> Table:
        """A copy whose event weights are multiplied by ``factor`` (test split -> full luminosity)."""
        out = self.subset(np.arange(len(self)))
        out.event_weight = out.event_weight * factor
        return out


def _format(path: Path) -> str:
    """'csv', 'hdf5' or 'root' from the file suffix."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in ROOT_SUFFIXES:
        return "root"
    raise InputFileError(path, f"unknown file type '{suffix}' (use .csv, .h5/.hdf5 or .root)")


def _missing(path: Path, wanted: Sequence[str], available: Sequence[str]) -> None:
    """Raise a one-line error naming the first wanted column not in ``available``."""
    for name in wanted:
        if name not in available:
            lower = {a.lower(): a for a in available}
            close = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, list(available), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputFileError(path, f"missing column '{name}'{hint}")


def _read_csv(path: Path, columns: Columns) -> dict[str, np.ndarray]:
    """Read the wanted columns of a CSV file with a header line."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rows = [row for row in reader if row]
    if not header:
        raise InputFileError(path, "empty file (no header line)")
    _missing(path, columns.required(), header)
    position = {name: header.index(name) for name in columns.required()}
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputFileError(path, f"line {line} has {len(row)} fields, the header has {len(header)}")
    for name in columns.numeric():
        raw = [row[position[name]].strip() for row in rows]
        try:
            out[name] = np.asarray(raw, dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(raw) if not _is_float(v))
            raise InputFileError(path, f"column '{name}' line {bad + 2}: not a number ({raw[bad]!r})") from None
    if columns.sample:
        out[columns.sample] = np.asarray([row[position[columns.sample]].strip() for row in rows], dtype=object)
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_hdf5(path: Path, columns: Columns, key: str | None) -> dict[str, np.ndarray]:
    """Read 1-D datasets of a group (default the root), or the fields of a compound dataset."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(path, f"cannot open as HDF5 ({exc})") from None
    with handle:
        if key and key not in handle:
            raise InputFileError(path, f"no group or dataset '{key}'")
        node = handle[key] if key else handle
        if isinstance(node, h5py.Dataset):
            if node.dtype.names is None:
                raise InputFileError(path, f"'{key}' is not a compound (table) dataset")
            available = list(node.dtype.names)
            _missing(path, columns.required(), available)
            data = node[()]
            raw = {name: data[name] for name in columns.required()}
        else:
            available = [k for k, v in node.items() if isinstance(v, h5py.Dataset)]
            _missing(path, columns.required(), available)
            raw = {name: node[name][()] for name in columns.required()}
    out: dict[str, np.ndarray] = {}
    for name in columns.numeric():
        arr = np.asarray(raw[name])
        if arr.ndim != 1:
            raise InputFileError(path, f"column '{name}' has shape {arr.shape}, expected one value per event")
        if arr.dtype.kind not in "biuf":
            raise InputFileError(path, f"column '{name}' is not numeric (dtype {arr.dtype})")
        out[name] = arr.astype(np.float64)
    if columns.sample:
        out[columns.sample] = _strings(raw[columns.sample])
    return out


def _strings(values: Any) -> np.ndarray:
    """Decode bytes to str and return an object array of names."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S" or arr.dtype == object:
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()], dtype=object)
    return arr.astype(str).astype(object)


def _read_root(path: Path, columns: Columns, tree: str | None) -> dict[str, np.ndarray]:
    """Read branches of a TTree (or fields of an RNTuple) with uproot."""
    import uproot

    try:
        handle = uproot.open(path)
    except Exception as exc:  # uproot raises many exception types for a bad file
        raise InputFileError(path, f"cannot open as ROOT file ({type(exc).__name__})") from None
    with handle:
        trees = [k.split(";")[0] for k, c in handle.classnames().items() if c in {"TTree", "ROOT::RNTuple"}]
        if tree is None:
            if len(set(trees)) != 1:
                found = ", ".join(sorted(set(trees))) or "none"
                raise InputFileError(path, f"give --tree (trees found: {found})")
            tree = trees[0]
        if tree not in trees:
            raise InputFileError(path, f"no tree '{tree}' (trees found: {', '.join(sorted(set(trees))) or 'none'})")
        obj = handle[tree]
        _missing(path, columns.required(), list(obj.keys()))
        raw = obj.arrays(columns.required(), library="np")
    out: dict[str, np.ndarray] = {}
    for name in columns.numeric():
        arr = np.asarray(raw[name])
        if arr.dtype == object or arr.ndim != 1:
            raise InputFileError(path, f"column '{name}' is not one number per event")
        out[name] = arr.astype(np.float64)
    if columns.sample:
        out[columns.sample] = _strings(raw[columns.sample])
    return out


def read_columns(path: str | Path, columns: Columns, *, tree: str | None = None, key: str | None = None) -> dict[str, np.ndarray]:
    """Read the columns named by ``columns`` from a CSV, HDF5 or ROOT file (format from the suffix)."""
    path = Path(path)
    kind = _format(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    if kind == "csv":
        return _read_csv(path, columns)
    if kind == "hdf5":
        return _read_hdf5(path, columns, key)
    return _read_root(path, columns, tree)


def validate(raw: dict[str, np.ndarray], columns: Columns, where: str) -> None:
    """Raise a one-line error naming the column for NaN/inf values, bad class values or an empty class."""
    check_finite(raw, columns, where)
    labels = raw[columns.label]
    if len(labels) == 0:
        raise UserError(f"{where}: no events")
    odd = ~np.isin(labels, (0.0, 1.0))
    if odd.any():
        raise UserError(f"{where}: column '{columns.label}' must be 0 (background) or 1 (signal), found {labels[odd][0]:g}")
    check_classes(labels, columns.label, where)


def check_classes(labels: np.ndarray, column: str, where: str) -> None:
    """Raise a one-line error naming the class column when signal or background is empty."""
    for value, name in ((1, "signal"), (0, "background")):
        if not np.any(labels == value):
            raise UserError(f"{where}: column '{column}' has no {name} events ({column} == {value})")


def to_table(raw: dict[str, np.ndarray], columns: Columns, source: str) -> Table:
    """Assemble a validated :class:`Table` from read columns (absent weights count as 1)."""
    validate(raw, columns, source)
    n = len(raw[columns.label])
    ones = np.ones(n)

    def weight(name: str | None) -> np.ndarray:
        return raw[name].astype(np.float64) if name else ones.copy()

    sample = raw[columns.sample] if columns.sample else np.where(raw[columns.label] == 1, "signal", "background").astype(object)
    x = np.column_stack([raw[v] for v in columns.variables]).astype(np.float64)
    return Table(
        x=x, y=raw[columns.label].astype(np.int64), training_weight=weight(columns.training_weight),
        event_weight=weight(columns.event_weight), post_fit_weight=weight(columns.post_fit_weight),
        sample=np.asarray(sample, dtype=object), variables=list(columns.variables), source=source,
    )


def load_table(paths: str | Path | Sequence[str | Path], columns: Columns, *, tree: str | None = None, key: str | None = None) -> Table:
    """Read and concatenate one or more files into a validated :class:`Table`."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise UserError("no input files given")
    parts = [read_columns(p, columns, tree=tree, key=key) for p in paths]
    for path, part in zip(paths, parts):
        check_finite(part, columns, str(path))
    raw = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return to_table(raw, columns, ",".join(str(p) for p in paths))


def check_finite(raw: dict[str, np.ndarray], columns: Columns, where: str) -> None:
    """Raise a one-line error naming the first column with NaN/inf values."""
    for name in columns.numeric():
        bad = ~np.isfinite(raw[name])
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise UserError(f"{where}: column '{name}' has {int(bad.sum())} NaN/inf value(s) (first at event {first})")


def parse_split_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """Parse 'train,val,test' ratios into fractions that sum to 1 (unlike the CNN's ``parse_split``, which keeps them)."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise UserError(f"--split: expected three numbers like 0.6,0.2,0.2, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0 or parts[2] <= 0 or sum(parts) <= 0:
        raise UserError(f"--split: expected three fractions train,val,test with train and test > 0, got {text!r}")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """A seeded shuffle of ``range(n)`` cut into train/val/test index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": np.sort(order[:n_train]), "val": np.sort(order[n_train : n_train + n_val]), "test": np.sort(order[n_train + n_val :])}


@dataclass
class Datasets:
    """The train, val and test tables and how they were made."""

    train: Table
    val: Table
    test: Table
    split: dict[str, np.ndarray] | None = None
    test_scale: float = 1.0


def load_datasets(
    columns: Columns,
    *,
    data: Sequence[str | Path] = (),
    train: str | Path | None = None,
    val: str | Path | None = None,
    test: str | Path | None = None,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    tree: str | None = None,
    key: str | None = None,
) -> Datasets:
    """Load ``--data`` files and split them with ``seed``, or load separate train/val/test files.

    With a split, the test events' EventWeight is scaled by N_all / N_test so that the
    sensitivity refers to the whole data set's luminosity.
    """
    given = [p is not None for p in (train, val, test)]
    if data and any(given):
        raise UserError("--data: give either --data (with --split) or --train/--val/--test, not both")
    if data:
        table = load_table(data, columns, tree=tree, key=key)
        index = split_indices(len(table), split, seed)
        parts = {}
        for name, idx in index.items():
            if name == "val" and len(idx) == 0:
                continue
            parts[name] = table.subset(idx, f"{table.source} [{name} split]")
            check_classes(parts[name].y, columns.label, parts[name].source)
        val_table = parts.get("val", parts["train"])
        scale = len(table) / len(index["test"])
        return Datasets(parts["train"], val_table, parts["test"].scaled_physics(scale), index, scale)
    if not all(given):
        missing = [n for n, g in zip(("--train", "--val", "--test"), given) if not g]
        if not any(given):
            raise UserError("--data: no input; give --data FILE (split by --split) or --train, --val and --test")
        raise UserError(f"{missing[0]}: give all of --train, --val and --test (or --data with --split)")
    train_t, val_t, test_t = (load_table([p], columns, tree=tree, key=key) for p in (train, val, test) if p is not None)
    return Datasets(train_t, val_t, test_t)


def training_weights(table: Table, mode: str = "abs", balance: bool = True) -> np.ndarray:
    """Per-event training weights: negative ones handled by ``mode``; classes balanced to equal sums.

    ``abs`` uses |w| (default: a negative weight would make the weighted loss unbounded below),
    ``zero`` drops those events from the loss, ``keep`` trains with the signed weights. With
    ``balance`` each class is rescaled to a total of N/2, so the mean weight is 1.
    """
    if mode not in NEGATIVE_WEIGHT_MODES:
        raise UserError(f"--negative-weights: expected one of {', '.join(NEGATIVE_WEIGHT_MODES)}, got {mode!r}")
    w = table.training_weight.astype(np.float64)
    if mode == "abs":
        w = np.abs(w)
    elif mode == "zero":
        w = np.where(w < 0, 0.0, w)
    if balance:
        n = len(w)
        for value in (0, 1):
            mask = table.y == value
            total = w[mask].sum()
            if total <= 0:
                raise UserError(f"{table.source}: training weights of class {value} sum to {total:g} (need > 0)")
            w[mask] *= (n / 2) / total
    return w


def check_weights(data: Datasets, columns: Columns, mode: str = "abs") -> None:
    """Refuse unusable weights before any training, naming the column and the file.

    Unusable: a training weight column that is 0 everywhere, or whose class totals (after the
    negative-weight ``mode``) are not positive; physics weights (EventWeight x post_fit_weight)
    whose signal or background total is not positive in the test events (the sensitivity's input).
    """
    tw = columns.training_weight or "training weight"
    for table in (data.train, data.val):
        if columns.training_weight and len(table) and not np.any(table.training_weight):
            raise UserError(f"{table.source}: column '{tw}' is 0 for every event: nothing to train with")
        w = table.training_weight.astype(np.float64)
        w = np.abs(w) if mode == "abs" else np.where(w < 0, 0.0, w) if mode == "zero" else w
        for value, name in ((1, "signal"), (0, "background")):
            total = float(w[table.y == value].sum())
            if not total > 0:
                raise UserError(f"{table.source}: column '{tw}' sums to {total:g} for the {name} events "
                                f"(after --negative-weights {mode}); need a positive total")
    ew = columns.event_weight or columns.post_fit_weight
    if ew is None:
        return
    both = "' x '".join(c for c in (columns.event_weight, columns.post_fit_weight) if c)
    for value, name in ((1, "signal"), (0, "background")):
        total = float(data.test.physics_weight[data.test.y == value].sum())
        if not total > 0:
            raise UserError(f"{data.test.source}: column '{both}' sums to {total:g} for the {name} events; "
                            "the sensitivity needs a positive expected yield")


def write_table(path: str | Path, data: dict[str, np.ndarray], *, tree: str = "Nominal") -> None:
    """Write columns to CSV, HDF5 (one dataset per column) or a ROOT TTree, atomically."""
    path = Path(path)
    kind = _format(path)
    names = list(data)
    with atomic_path(path, suffix=path.suffix) as tmp:
        if kind == "csv":
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(names)
                writer.writerows(zip(*(_csv_values(data[n]) for n in names)))
        elif kind == "hdf5":
            import io

            import h5py

            # Built in memory, then written with plain I/O: HDF5 reports a full disk only when it frees
            # dataset handles (as ignored exceptions, or a crash), never as an error the caller sees.
            image = io.BytesIO()
            with h5py.File(image, "w") as handle:
                for name in names:
                    values = data[name]
                    if values.dtype == object:
                        handle.create_dataset(name, data=values.astype(str).astype("S"))
                    else:
                        handle.create_dataset(name, data=values, compression="gzip")
            tmp.write_bytes(image.getvalue())
        else:
            import uproot

            with uproot.recreate(tmp) as handle:
                types = {n: ("string" if data[n].dtype == object else data[n].dtype) for n in names}
                handle.mktree(tree, types)
                handle[tree].extend({n: (_awkward_strings(data[n]) if data[n].dtype == object else data[n]) for n in names})


def _csv_values(values: np.ndarray) -> list[Any]:
    """Column values as CSV cells: floats with 7 significant digits, everything else as is."""
    if values.dtype.kind == "f":
        return [f"{v:.7g}" for v in values.tolist()]
    return values.tolist()


def _awkward_strings(values: np.ndarray) -> Any:
    """An awkward array of strings for uproot's string branches."""
    import awkward as ak

    return ak.Array([str(v) for v in values.tolist()])
