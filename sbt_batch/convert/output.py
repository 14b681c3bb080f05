"""The HDF5 output layout of convert: dataset names, chunking, creation and provenance attributes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import check_writable_dir
from sbt_batch.convert.names import ET_DATASET, INDEX_DATASET, RHO_BRANCH, RHO_DATASET

if TYPE_CHECKING:  # pragma: no cover
    import h5py

CHUNK_EVENTS = 64  # events per gTowerEt chunk (about 200 kB for 24 x 32 towers)
FLAT_CHUNK = 16384  # events per chunk of the per-event scalars
# Standard HDF5 filters (shuffle + deflate) so that any HDF5 reader opens the output. Whole gTowerEt
# chunks are encoded by sbt_batch.convert.h5chunks (ISA-L deflate of the planes that compress) and written
# raw; HDF5 itself only compresses the few partial chunks at file boundaries.
COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def create_datasets(h5: h5py.File, n: int, shape: tuple[int, int], level: int | None = 1) -> None:
    """Create gTowerEt (n, rows, cols), offlineRho and fileIndex (n,), chunked and deflated at ``level``."""
    import numpy as np

    rows, cols = shape
    filters = dict(COMPRESSION, compression_opts=level) if level else {}
    h5.create_dataset(
        ET_DATASET, shape=(n, rows, cols), maxshape=(None, rows, cols), dtype=np.float32,
        chunks=(CHUNK_EVENTS, rows, cols), **filters,
    )  # fmt: skip
    flat = dict(maxshape=(None,), chunks=(FLAT_CHUNK,), **filters)
    h5.create_dataset(RHO_DATASET, shape=(n,), dtype=np.float32, **flat)
    h5.create_dataset(INDEX_DATASET, shape=(n,), dtype=np.int32, **flat)
    h5[ET_DATASET].attrs["units"] = "MeV"
    h5[ET_DATASET].attrs["dims"] = "event, eta row (ascending), phi column (ascending)"
    h5[RHO_DATASET].attrs["source"] = RHO_BRANCH
    h5[INDEX_DATASET].attrs["description"] = "index into the file attribute 'inputs' of each event's source file"


def write_provenance(h5: h5py.File, attrs: dict[str, Any]) -> None:
    """Store provenance attributes (lists of strings become string arrays, dicts and lists of dicts JSON)."""
    import h5py
    import numpy as np

    for key, value in attrs.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            h5.attrs[key] = np.array(value, dtype=h5py.string_dtype())
        elif isinstance(value, (list, tuple)) and not value:
            h5.attrs[key] = np.array([], dtype=h5py.string_dtype())
        elif isinstance(value, dict) or (isinstance(value, (list, tuple)) and isinstance(value[0], dict)):
            h5.attrs[key] = json.dumps(value)
        else:
            h5.attrs[key] = value


def check_output(output: Path) -> None:
    """Raise a UserError unless ``output`` can be written (its directory exists and is writable)."""
    if output.is_dir():
        raise UserError(f"{output}: output is a directory")
    check_writable_dir(output.parent, "output")
    if output.exists() and not os.access(output, os.W_OK):
        raise UserError(f"{output}: output exists and is not writable")
