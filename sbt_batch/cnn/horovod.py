"""Horovod backend of the training loop's context (see :mod:`sbt_batch.cnn.context`).

Horovod 0.28.1 with Keras 3 only works through ``horovod.tensorflow``'s low-level ops, so this
module averages plain ``tf.GradientTape`` gradients with ``grouped_allreduce`` and broadcasts
model and optimizer variables one by one (``DistributedGradientTape``, ``broadcast_variables``
and ``horovod.tensorflow.keras`` all fail with Keras 3).

Importing this module is cheap: Horovod and TensorFlow are imported only by :func:`detect` when
the environment shows a launch with several ranks (horovodrun, mpirun, ``srun --mpi=pmix``, or the
HTCondor parallel-universe node wrapper, which sets horovodrun's Gloo variables).
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from sbt_batch.common.console import import_tensorflow, log
from sbt_batch.common.errors import UserError
from sbt_batch.common.launchenv import Launch, launch_info
from sbt_batch.common.optional import install_hint, require

PURPOSE = "training on several ranks"  # what the install hint names when Horovod is missing
WARMUP_ENV = "SBT_BATCH_LR_WARMUP_EPOCHS"  # default warm-up when the loop does not pass one
SCALING_ENV = "SBT_BATCH_LR_SCALING"  # "linear" (default) or "none"


def import_horovod(purpose: str = PURPOSE) -> Any:
    """``horovod.tensorflow``, or a UserError that says how to install it."""
    import_tensorflow(purpose)  # TensorFlow first: its start-up lines filtered, its own install hint
    try:
        return require("horovod.tensorflow", purpose)
    except UserError:
        raise
    except Exception as exc:  # a build against another TensorFlow fails with NotFoundError/OSError
        raise UserError(f"{purpose}: Horovod does not load with this TensorFlow ({type(exc).__name__}: {exc}); "
                        f"rebuild it: {install_hint('horovod')}") from None


def detect(env: Mapping[str, str] | None = None) -> HorovodContext | None:
    """A started :class:`HorovodContext` when this process is one of several ranks, else None."""
    info = launch_info(env)
    if info is None or info.size <= 1:
        return None
    return HorovodContext.start(info)


def lr_scale(size: int, epoch: float, warmup_epochs: float, scaling: str = "linear") -> float:
    """Learning-rate multiplier: 1 -> ``size`` linearly over ``warmup_epochs`` (Goyal et al. 2017), then ``size``."""
    if scaling == "none" or size <= 1:
        return 1.0
    if scaling != "linear":
        raise UserError(f"{SCALING_ENV}: unknown learning-rate scaling '{scaling}' (choose linear or none)")
    if warmup_epochs <= 0:
        return float(size)
    return 1.0 + (size - 1) * min(1.0, max(0.0, epoch) / warmup_epochs)


def weights_digest(variables: list[Any]) -> str:
    """A short SHA-1 over the values of ``variables`` (identical on every rank when they are in sync)."""
    h = hashlib.sha1()
    for v in variables:
        h.update(np.ascontiguousarray(np.asarray(v.numpy())).tobytes())
    return h.hexdigest()[:16]


class HorovodContext:
    """The training loop's context on one of ``size`` Horovod ranks."""

    name = "horovod"

    def __init__(self, hvd: Any, launcher: str = "horovod") -> None:
        self._hvd = hvd
        self.rank = int(hvd.rank())
        self.size = int(hvd.size())
        self.local_rank = int(hvd.local_rank())
        self.launcher = launcher
        try:
            self.lr_warmup_epochs = float(os.environ.get(WARMUP_ENV) or 1)
        except ValueError:
            raise UserError(f"{WARMUP_ENV}: expected a number of epochs, got {os.environ[WARMUP_ENV]!r}") from None
        self.lr_scaling = os.environ.get(SCALING_ENV, "linear") or "linear"
        self._variables: list[Any] = []

    @classmethod
    def start(cls, info: Launch) -> HorovodContext:
        """Pin this rank's GPU, initialize Horovod and check it sees the ranks the launcher started."""
        _pin_gpu(info.local_rank)
        _share_cpus(info.size)
        hvd = import_horovod()
        hvd.init()
        if hvd.size() != info.size:
            ctl = "MPI" if hvd.mpi_enabled() else "Gloo" if hvd.gloo_enabled() else "no controller"
            raise UserError(f"{info.launcher} started {info.size} ranks but Horovod ({ctl}) sees {hvd.size()}: "
                            "was Horovod built with MPI (horovodrun --check-build)?")
        ctx = cls(hvd, info.launcher)
        atexit.register(ctx._report_weights)
        if ctx.is_root:
            log.info("horovod: %d ranks via %s (%s)", ctx.size, info.launcher,
                     "MPI" if hvd.mpi_enabled() else "Gloo")
        return ctx

    @property
    def is_root(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous, equal-length slice of ``indices`` (the remainder is dropped)."""
        from sbt_batch.cnn.prepare import shard_contiguous

        part = shard_contiguous(np.asarray(indices), self.rank, self.size)
        if len(part) == 0:
            raise UserError(f"{self.size} ranks: more ranks than data shards ({len(indices)} training events); "
                            "use fewer ranks")
        return part

    def allreduce_gradients(self, grads: list[Any]) -> list[Any]:
        """Gradients averaged over ranks with one grouped allreduce (called inside tf.function)."""
        present = [i for i, g in enumerate(grads) if g is not None]
        reduced = self._hvd.grouped_allreduce([grads[i] for i in present], op=self._hvd.Average)
        out = list(grads)
        for i, g in zip(present, reduced):
            out[i] = g
        return out

    def broadcast_variables(self, variables: list[Any]) -> None:
        """Overwrite ``variables`` (model and optimizer) with rank 0's values."""
        self._variables = list(variables)
        for i, v in enumerate(self._variables):
            v.assign(self._hvd.broadcast(v.value, root_rank=0, name=f"sbt_bcast_{i}"))

    def average(self, value: float) -> float:
        """The mean of a Python scalar over ranks (eager)."""
        tf = import_tensorflow(PURPOSE)

        out = self._hvd.allreduce(tf.constant(float(value), tf.float64), op=self._hvd.Average, name="sbt_average")
        return float(out.numpy())

    def lr_multiplier(self, epoch: float) -> float:
        """Factor on the scheduled learning rate at ``epoch``: 1 -> size over the warm-up, then size."""
        return lr_scale(self.size, epoch, self.lr_warmup_epochs, self.lr_scaling)

    def check_synchronized(self, variables: list[Any] | None = None) -> str:
        """Digest of the variables, raising if any rank holds different values (collective: call on all ranks)."""
        tf = import_tensorflow(PURPOSE)

        digest = weights_digest(variables if variables is not None else self._variables)
        mine = tf.constant([int(digest[:12], 16)], tf.int64)
        everyone = [int(x) for x in self._hvd.allgather(mine, name="sbt_digest").numpy()]
        if len(set(everyone)) != 1:
            raise RuntimeError(f"rank {self.rank}: weights differ across ranks (digests {everyone})")
        return digest

    def _report_weights(self) -> None:
        """At exit: log this rank's weights digest (compare the lines of all ranks)."""
        if self._variables:
            try:
                log.info("rank %d/%d weights %s", self.rank, self.size, weights_digest(self._variables))
            except Exception:  # interpreter shutting down
                pass


def _share_cpus(size: int) -> None:
    """When the ranks on this node outnumber half its cores, let Open MPI yield instead of busy-polling."""
    env = os.environ
    local = env.get("OMPI_COMM_WORLD_LOCAL_SIZE") or env.get("HOROVOD_LOCAL_SIZE") or env.get("MPI_LOCALNRANKS")
    if local is None and env.get("SLURM_STEP_TASKS_PER_NODE"):
        local = env["SLURM_STEP_TASKS_PER_NODE"].split("(")[0].split(",")[0]
    try:
        n_local = int(local) if local else size
    except ValueError:
        n_local = size
    if 2 * n_local > (os.cpu_count() or 1):
        env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")


def _pin_gpu(local_rank: int) -> None:
    """Give this rank one GPU (local rank modulo GPUs) unless CUDA_VISIBLE_DEVICES already chose."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return
    tf = import_tensorflow(PURPOSE)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[local_rank % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")


def build_info() -> dict[str, Any]:
    """How the installed Horovod was built (for ``sbt-batch selfcheck``): controllers, GPU ops, MPI, mpi4py."""
    from importlib import metadata

    info: dict[str, Any] = {}
    try:
        info["version"] = metadata.version("horovod")
    except metadata.PackageNotFoundError:
        return {"error": f"Horovod is not installed; install it with: {install_hint('horovod')}"}
    try:
        hvd = import_horovod()
    except UserError as exc:
        return {"version": info["version"], "error": str(exc)}
    info["controllers"] = {"mpi": bool(hvd.mpi_built()), "gloo": bool(hvd.gloo_built())}
    ops = {}
    for key in ("nccl", "cuda", "rocm", "ddl", "ccl"):
        fn = getattr(hvd, f"{key}_built", None)
        if fn is not None:
            ops[key] = bool(fn())
    info["gpu_ops"] = ops
    try:
        info["mpi4py"] = metadata.version("mpi4py")
    except metadata.PackageNotFoundError:
        info["mpi4py"] = "not installed"
    return info
