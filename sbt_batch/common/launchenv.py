"""Where a process sits in a launch: rank variables of MPI, Horovod and Slurm, and the scheduler's job id.

Read from the environment only (no MPI or Horovod import, except :func:`mpi_world` for a PMIx
launcher that sets no size), so that the task wrapper, the training context and the launcher agree
on one table of variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sbt_batch.common.errors import UserError

# (rank variable, size variable, local-rank variable, launcher) in order of preference
RANK_VARIABLES = (
    ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "horovodrun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "mpiexec"),
)
# further rank variables that only name a rank (the task wrapper records state on rank 0 only)
EXTRA_RANK_VARIABLES = ("PMIX_RANK", "SLURM_PROCID")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a multi-rank launch, read from the launcher's environment."""

    rank: int
    size: int
    local_rank: int
    launcher: str


def env_int(env: Mapping[str, str], name: str) -> int | None:
    """The integer value of ``env[name]`` (None when unset or empty); UserError naming the variable otherwise."""
    value = env.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise UserError(f"environment variable {name}: expected an integer, got {value!r}") from None


def launch_info(env: Mapping[str, str] | None = None) -> Launch | None:
    """The rank/size that a launcher put into ``env`` (no MPI or Horovod import), or None when not launched."""
    env = os.environ if env is None else env
    for rank_var, size_var, local_var, launcher in RANK_VARIABLES:
        rank, size = env_int(env, rank_var), env_int(env, size_var)
        if rank is not None and size is not None:
            if launcher == "horovodrun" and env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
                # horovodrun --gloo, or sbt-batch's own Gloo launcher (HTCondor parallel universe) naming itself
                launcher = env.get("SBT_BATCH_RANK_LAUNCHER") or "horovodrun --gloo"
            local = env_int(env, local_var)
            return Launch(rank, size, rank if local is None else local, launcher)
    # srun: SLURM_PROCID/SLURM_STEP_NUM_TASKS exist in every step; only a PMI plugin lets MPI see the others
    rank, size = env_int(env, "SLURM_PROCID"), env_int(env, "SLURM_STEP_NUM_TASKS")
    if rank is not None and size is not None and env.get("SLURM_STEP_ID") not in (None, "batch", "extern"):
        local = env_int(env, "SLURM_LOCALID")
        if size > 1 and not (env.get("PMIX_RANK") or env.get("PMI_FD") or env.get("PMI_RANK")):
            raise UserError(f"srun started {size} tasks without an MPI plugin, so they cannot talk to each other: "
                            "launch with 'srun --mpi=pmix'")
        return Launch(rank, size, rank if local is None else local, "srun --mpi=pmix")
    if env.get("PMIX_RANK"):  # another PMIx launcher (prterun, ...): ask MPI itself
        world = mpi_world()
        if world is not None:
            return Launch(world[0], world[1], env_int(env, "PMIX_LOCAL_RANK") or 0, "pmix")
    return None


def mpi_world() -> tuple[int, int] | None:
    """(rank, size) of MPI_COMM_WORLD through mpi4py (initializes MPI), or None without mpi4py."""
    from sbt_batch.common.optional import try_import

    mpi = try_import("mpi4py.MPI")
    if mpi is None:
        return None
    return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()


def current_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank under an MPI, Horovod or Slurm launcher (0 when not launched by one)."""
    env = os.environ if env is None else env
    for var in (*(row[0] for row in RANK_VARIABLES), *EXTRA_RANK_VARIABLES):
        value = env.get(var)
        if value and value.isdigit():
            return int(value)
    return 0


def scheduler_job_id(env: Mapping[str, str] | None = None) -> str | None:
    """The scheduler's id for this job, from the environment (Slurm, HTCondor, local runner)."""
    env = os.environ if env is None else env
    if env.get("SBT_BATCH_JOB_ID"):
        return env["SBT_BATCH_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    return None
