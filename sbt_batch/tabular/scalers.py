"""Input scalers fitted on the training split only and saved beside the model as JSON.

``minmax`` maps the train range to [0, 1], ``norm`` maps it to [-1, 1], ``standard`` subtracts the
train mean and divides by the train standard deviation; ``none`` leaves inputs unchanged. The
statistics are unweighted (a scaler only conditions the inputs). A constant column is left
centred with unit scale instead of dividing by zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import write_json_atomic

SCALERS = ("minmax", "standard", "norm", "none")


@dataclass
class Scaler:
    """x -> (x - offset) / scale per variable, with the fitted statistics."""

    kind: str
    variables: list[str] = field(default_factory=list)
    offset: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply the fitted scaling to an (n, k) array."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.offset):
            raise UserError(f"scaler: expected {len(self.offset)} variables, got array of shape {x.shape}")
        return (x - np.asarray(self.offset)) / np.asarray(self.scale)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`."""
        return np.asarray(z) * np.asarray(self.scale) + np.asarray(self.offset)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {"kind": self.kind, "variables": self.variables, "offset": self.offset, "scale": self.scale}

    def save(self, path: str | Path) -> None:
        """Write the scaler as JSON (atomically)."""
        write_json_atomic(path, self.to_dict())


def fit_scaler(kind: str, x_train: np.ndarray, variables: list[str] | None = None) -> Scaler:
    """Fit a scaler of ``kind`` on the training inputs only."""
    if kind not in SCALERS:
        raise UserError(f"--scaler: expected one of {', '.join(SCALERS)}, got {kind!r}")
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"scaler: need a non-empty (events, variables) array, got shape {x.shape}")
    k = x.shape[1]
    if kind == "none":
        offset, scale = np.zeros(k), np.ones(k)
    elif kind == "standard":
        offset, scale = x.mean(axis=0), x.std(axis=0)
    else:
        lo, hi = x.min(axis=0), x.max(axis=0)
        if kind == "minmax":
            offset, scale = lo, hi - lo
        else:  # norm: [-1, 1]
            offset, scale = (hi + lo) / 2, (hi - lo) / 2
    scale = np.where(scale > 0, scale, 1.0)
    names = list(variables) if variables else [f"x{i}" for i in range(k)]
    return Scaler(kind, names, offset.tolist(), scale.tolist())


def load_scaler(path: str | Path) -> Scaler:
    """Read a scaler written by :meth:`Scaler.save`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        scaler = Scaler(str(data["kind"]), list(data["variables"]), [float(v) for v in data["offset"]], [float(v) for v in data["scale"]])
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (ValueError, KeyError, TypeError):
        raise InputFileError(path, "not a scaler JSON file (kind, variables, offset, scale)") from None
    if scaler.kind not in SCALERS or len(scaler.offset) != len(scaler.scale):
        raise InputFileError(path, "inconsistent scaler file")
    return scaler
