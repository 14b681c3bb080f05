"""The training loop's view of its ranks: one small context object, single-process or Horovod.

The loop only calls what :class:`Context` defines, so a new backend (``sbt_batch.cnn.horovod``) implements
the same methods and :func:`detect` returns it when the process was started with several ranks.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Context(Protocol):
    """What the training loop needs from a distributed backend."""

    rank: int
    size: int

    @property
    def is_root(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        ...

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's share of ``indices``: contiguous, equal-length slices (the remainder is dropped)."""
        ...

    def allreduce_gradients(self, grads: list[Any]) -> list[Any]:
        """Gradients averaged over ranks (called inside tf.function)."""
        ...

    def broadcast_variables(self, variables: list[Any]) -> None:
        """Overwrite ``variables`` with rank 0's values (called eagerly, after the first step)."""
        ...

    def average(self, value: float) -> float:
        """The mean of a Python scalar over ranks (eager)."""
        ...

    # Optional: ``lr_multiplier(epoch) -> float``; when present the loop multiplies the scheduled
    # learning rate by it (for example ``size`` after a warm-up, as docs/horovod.md describes).


class SingleProcess:
    """The one-rank context: every collective is the identity."""

    rank = 0
    size = 1
    name = "single"

    @property
    def is_root(self) -> bool:
        """Always True."""
        return True

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """All of ``indices``."""
        return indices

    def allreduce_gradients(self, grads: list[Any]) -> list[Any]:
        """``grads`` unchanged."""
        return grads

    def broadcast_variables(self, variables: list[Any]) -> None:
        """Nothing to do."""

    def average(self, value: float) -> float:
        """``value`` unchanged."""
        return float(value)


def detect() -> Context:
    """The context for this process: Horovod when launched with several ranks, else single-process."""
    from sbt_batch.cnn import horovod  # cheap: Horovod itself is imported only when there are several ranks

    ctx = horovod.detect()
    return ctx if ctx is not None else SingleProcess()
