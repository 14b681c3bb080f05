"""Detector symmetries of the gFEX image (rows = eta, columns = phi): padding layers, augmentation, test-time averaging.

- phi is periodic: an image rolled by whole towers in phi is the same physics (``roll``);
- the calorimeter is close to symmetric under eta -> -eta (``flip`` of the rows).

``GROUPS`` names the symmetry groups used by ``--augment`` (random element per event and step) and
``--tta`` (average of the scores over every element). The Keras layers (:func:`keras_layers`) are
defined on first use so that importing this module does not load TensorFlow.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sbt_batch.common.console import import_keras
from sbt_batch.common.errors import UserError

GROUPS = ("none", "phi", "eta", "full")  # full = phi rotations x eta reflection
PADDINGS = ("valid", "circular", "circular-reflect")  # valid: the notebook; circular: phi wraps, eta zero / reflect
PHI_AXIS, ETA_AXIS = 2, 1  # of an (N, rows, 32, C) batch


def check_group(value: str, option: str) -> None:
    """Raise a one-line UserError for an unknown symmetry group name."""
    if value not in GROUPS:
        raise UserError(f"{option}: unknown symmetry group '{value}' (choose from {', '.join(GROUPS)})")


def check_padding(value: str) -> None:
    """Raise a one-line UserError for an unknown padding mode."""
    if value not in PADDINGS:
        raise UserError(f"--padding: unknown padding '{value}' (choose from {', '.join(PADDINGS)})")


def augment_batch(x: np.ndarray, group: str, rng: np.random.Generator) -> np.ndarray:
    """Each event rolled by a random whole number of phi towers and/or reflected in eta (``group``)."""
    if group == "none":
        return x
    x = np.asarray(x)
    n, _rows, width = x.shape[0], x.shape[ETA_AXIS], x.shape[PHI_AXIS]
    shift = np.asarray(rng.integers(0, width, size=n) if group in ("phi", "full") else np.zeros(n), np.int64)
    flip = rng.random(n) < 0.5 if group in ("eta", "full") else np.zeros(n, bool)
    cols = (np.arange(width)[None, :] - shift[:, None]) % width  # rolled phi index per event
    out = np.take_along_axis(x, cols[:, None, :, None].astype(np.int64), axis=PHI_AXIS)
    out[flip] = out[flip, ::-1]
    return np.ascontiguousarray(out)


def augment_rng(seed: int, epoch: int, step: int, rank: int = 0) -> np.random.Generator:
    """The generator of one training step: a function of (seed, epoch, step, rank) only, so --resume repeats it."""
    return np.random.default_rng([int(seed), int(epoch), int(step), int(rank), 0x5B7])


def group_elements(group: str, width: int = 32) -> list[tuple[int, bool]]:
    """Every (phi shift, eta flip) element of ``group``."""
    shifts = range(width) if group in ("phi", "full") else [0]
    flips = (False, True) if group in ("eta", "full") else (False,)
    return [(s, f) for f in flips for s in shifts]


def transform(x: np.ndarray, shift: int, flip: bool) -> np.ndarray:
    """One group element applied to an (N, rows, phi, C) batch."""
    out = np.roll(x, shift, axis=PHI_AXIS) if shift else x
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def averaged_scores(score_fn: Any, x: np.ndarray, group: str) -> np.ndarray:
    """Mean of ``score_fn(g(x))`` over every element g of ``group`` (test-time averaging)."""
    elements = group_elements(group, x.shape[PHI_AXIS])
    total = np.zeros(x.shape[0], np.float64)
    for shift, flip in elements:
        total += np.asarray(score_fn(transform(x, shift, flip)), np.float64)
    return (total / len(elements)).astype(np.float32)


# --------------------------------------------------------------------------- Keras layers


@functools.lru_cache(maxsize=1)
def keras_layers() -> dict[str, type]:
    """The custom Keras layers (PhiPad, ResidualBlock, GlobalMaxMean, SymmetryAverage), registered for model.keras loading."""
    keras: Any = import_keras("building a CNN")
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="sbt_batch")
    class PhiPad(keras.layers.Layer):
        """Pad (N, eta, phi, C) by ``size``: periodic in phi, zeros or a reflection in eta (``eta``)."""

        def __init__(self, size: int = 1, eta: str = "zero", phi: str = "circular", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size, self.eta, self.phi = int(size), eta, phi

        def call(self, x: Any) -> Any:
            p = self.size
            if self.phi == "circular":
                x = ops.concatenate([x[:, :, -p:], x, x[:, :, :p]], axis=2)
            else:
                x = ops.pad(x, [[0, 0], [0, 0], [p, p], [0, 0]])
            if self.eta == "reflect":  # rows p..1 above, the mirror below (no edge repeat), as numpy 'reflect'
                top = ops.flip(x[:, 1 : p + 1], axis=1)
                bottom = ops.flip(x[:, -p - 1 : -1], axis=1)
                return ops.concatenate([top, x, bottom], axis=1)
            return ops.pad(x, [[0, 0], [p, p], [0, 0], [0, 0]])

        def compute_output_shape(self, shape: Any) -> Any:
            n, h, w, c = shape
            p = 2 * self.size
            return (n, None if h is None else h + p, None if w is None else w + p, c)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "size": self.size, "eta": self.eta, "phi": self.phi}

    @keras.saving.register_keras_serializable(package="sbt_batch")
    class ResidualBlock(keras.layers.Layer):
        """relu(x + conv(relu(conv(x)))) with 3x3 convs padded by PhiPad (1x1 projection when channels change)."""

        def __init__(self, filters: int, eta: str = "zero", phi: str = "circular", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.filters, self.eta, self.phi = int(filters), eta, phi
            self.pad = PhiPad(1, eta, phi)
            self.conv1 = keras.layers.Conv2D(self.filters, 3, activation="relu")
            self.conv2 = keras.layers.Conv2D(self.filters, 3)
            self.proj: Any = None

        def build(self, shape: Any) -> None:
            padded = self.pad.compute_output_shape(shape)
            self.conv1.build(padded)
            self.conv2.build((*padded[:3], self.filters))
            if shape[-1] != self.filters:
                self.proj = keras.layers.Conv2D(self.filters, 1)
                self.proj.build(shape)

        def call(self, x: Any) -> Any:
            h = self.conv2(self.pad(self.conv1(self.pad(x))))
            skip = self.proj(x) if self.proj is not None else x
            return ops.relu(h + skip)

        def compute_output_shape(self, shape: Any) -> Any:
            return (*shape[:3], self.filters)

        def cost_layers(self, shape: Any) -> list[tuple[Any, Any]]:
            """The convolutions inside, each with its output shape (for ``models.model_cost``)."""
            out_shape = self.compute_output_shape(shape)  # every conv keeps the block's output shape
            return [(conv, out_shape) for conv in (self.conv1, self.conv2, self.proj) if conv is not None]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "filters": self.filters, "eta": self.eta, "phi": self.phi}

    @keras.saving.register_keras_serializable(package="sbt_batch")
    class GlobalMaxMean(keras.layers.Layer):
        """(N, H, W, C) -> (N, 2C): the maximum and the mean of each channel over the image."""

        def call(self, x: Any) -> Any:
            return ops.concatenate([ops.max(x, axis=(1, 2)), ops.mean(x, axis=(1, 2))], axis=1)

        def compute_output_shape(self, shape: Any) -> Any:
            return (shape[0], 2 * shape[-1])

    @keras.saving.register_keras_serializable(package="sbt_batch")
    class SymmetryAverage(keras.layers.Layer):
        """Export wrapper: the mean of ``inner`` over the symmetry group (test-time averaging in the graph)."""

        def __init__(self, inner: Any, group: str = "full", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.inner, self.group = inner, group

        def call(self, x: Any) -> Any:
            outs = []
            width = x.shape[2]
            for shift, flip in group_elements(self.group, width):
                g = ops.concatenate([x[:, :, width - shift :], x[:, :, : width - shift]], axis=2) if shift else x
                outs.append(self.inner(ops.flip(g, axis=1) if flip else g))
            return ops.mean(ops.stack(outs, axis=0), axis=0)

    return {"PhiPad": PhiPad, "ResidualBlock": ResidualBlock, "GlobalMaxMean": GlobalMaxMean,
            "SymmetryAverage": SymmetryAverage}


def pad_modes(padding: str) -> tuple[str, str]:
    """(phi, eta) modes of a ``--padding`` value other than 'valid'."""
    return "circular", ("reflect" if padding == "circular-reflect" else "zero")


def with_tta(model: Any, group: str) -> Any:
    """``model`` wrapped so that its output is the average over ``group`` (``model`` itself for 'none')."""
    if group == "none":
        return model
    keras = import_keras("test-time averaging")
    avg = keras_layers()["SymmetryAverage"](model, group)
    return keras.Sequential([keras.Input(model.input_shape[1:]), avg], name=f"{model.name}_tta")
