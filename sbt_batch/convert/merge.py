"""Merging converted HDF5 outputs in order (the batch layer's collect of convert runs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbt_batch import __version__
from sbt_batch.common.errors import InputFileError, UserError, one_line
from sbt_batch.common.fileio import atomic_path, is_hdf5
from sbt_batch.common.provenance import check_part_versions, stamp_merge, utc_now
from sbt_batch.convert.h5chunks import EventWriter, copy_events
from sbt_batch.convert.names import ET_DATASET, INDEX_DATASET, RHO_DATASET
from sbt_batch.convert.output import FLAT_CHUNK, check_output, create_datasets, write_provenance


@dataclass
class MergeResult:
    """What :func:`merge_outputs` wrote."""

    output: Path
    events: int
    parts: list[tuple[str, int]]
    inputs: list[str]
    raw_chunks: int


def read_attr_list(h5: Any, key: str) -> list[Any]:
    """A list-valued file attribute of an open HDF5 file (a string array, JSON list or one string); [] when absent."""
    value = h5.attrs.get(key)
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return json.loads(text) if text.startswith("[") else [text]
    return [v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v) for v in value]


def merge_outputs(parts: Sequence[str | Path], out: str | Path, expected_events: int | None = None) -> MergeResult:
    """Merge converted HDF5 files in the given order into ``out`` (atomically), checking event counts."""
    import h5py
    import numpy as np

    paths = [Path(p) for p in parts]
    if not paths:
        raise UserError("merge: no parts to merge")
    out = Path(out)
    check_output(out)
    infos: list[dict[str, Any]] = []
    for part in paths:
        if not is_hdf5(part):
            raise InputFileError(part, "missing or not an HDF5 file" if part.exists() else "no such file")
        try:
            with h5py.File(part, "r") as h5:
                missing = [d for d in (ET_DATASET, RHO_DATASET) if d not in h5]
                if missing:
                    raise InputFileError(part, f"no dataset '{missing[0]}'")
                n = h5[ET_DATASET].shape[0]
                part_entries = [int(e) for e in read_attr_list(h5, "entries")]
                if h5[RHO_DATASET].shape[0] != n:
                    raise InputFileError(part, f"{ET_DATASET} has {n} events but {RHO_DATASET} has {h5[RHO_DATASET].shape[0]}")
                if "entries" in h5.attrs and sum(part_entries) != n:
                    raise InputFileError(part, f"has {n} events but its inputs had {sum(part_entries)} entries")
                infos.append({
                    "n": n, "shape": h5[ET_DATASET].shape[1:], "entries": part_entries,
                    "inputs": read_attr_list(h5, "inputs"), "skipped": read_attr_list(h5, "skipped"),
                    "padded": [int(p) for p in read_attr_list(h5, "padded")], "pad_towers": bool(h5.attrs.get("pad_towers", False)),
                    "eta": np.asarray(h5.attrs.get("eta_centers", [])), "phi": np.asarray(h5.attrs.get("phi_centers", [])),
                    "eta_max": h5.attrs.get("eta_max"), "has_index": INDEX_DATASET in h5,
                })  # fmt: skip
        except OSError as exc:
            raise InputFileError(part, f"cannot read HDF5 ({one_line(exc)})") from None
    check_part_versions(paths)  # one tool version unless collect --allow-mixed
    first = infos[0]
    for part, info in zip(paths, infos):
        if info["shape"] != first["shape"] or not (np.array_equal(info["eta"], first["eta"]) and np.array_equal(info["phi"], first["phi"])):
            raise InputFileError(part, f"grid {info['shape']} differs from {paths[0]} {first['shape']}")
    total = sum(i["n"] for i in infos)
    if expected_events is not None and total != expected_events:
        raise UserError(f"{out}: the parts hold {total} events but {expected_events} were expected")
    raw = 0
    inputs: list[str] = []
    entries: list[int] = []
    skipped: list[Any] = []
    padded: list[int] = []
    with atomic_path(out, suffix=".h5") as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=8 * 1024**2) as h5:
            create_datasets(h5, total, tuple(first["shape"]))
            at = 0
            for part, info in zip(paths, infos):
                n = info["n"]
                with h5py.File(part, "r") as ph:
                    raw += copy_events(ph[ET_DATASET], 0, n, h5[ET_DATASET], at, writer=EventWriter(h5[ET_DATASET]))
                    copy_events(ph[RHO_DATASET], 0, n, h5[RHO_DATASET], at)
                    if info["has_index"]:
                        for lo in range(0, n, FLAT_CHUNK * 16):
                            hi = min(n, lo + FLAT_CHUNK * 16)
                            h5[INDEX_DATASET][at + lo : at + hi] = ph[INDEX_DATASET][lo:hi] + len(inputs)
                    else:
                        h5[INDEX_DATASET][at : at + n] = len(inputs)
                part_inputs = info["inputs"] or [str(part)]
                inputs += part_inputs
                entries += info["entries"] or [n]
                skipped += info["skipped"]
                padded += info["padded"] or [0] * len(info["entries"] or [n])
                at += n
            write_provenance(h5, {
                "inputs": inputs, "entries": entries,
                "eta_max": float(first["eta_max"]) if first["eta_max"] is not None else float("nan"),
                "eta_centers": first["eta"], "phi_centers": first["phi"],
                "tool": "sbt-batch merge", "tool_version": __version__, "created": utc_now(),
                "merged_from": [str(p) for p in paths], "skipped": skipped, "n_skipped": len(skipped),
                "pad_towers": any(i["pad_towers"] for i in infos), "padded": padded, "n_padded": int(sum(padded)),
            })  # fmt: skip
            stamp_merge(h5, out, paths)
    return MergeResult(out, total, [(str(p), i["n"]) for p, i in zip(paths, infos)], inputs, raw)
