"""Several ranks of one training as one batch job: ``submit train --nodes/--ntasks/--ntasks-per-node/--gpus-per-node``.

The checks that hold for every backend live here (counts, ``--ntasks`` against ``--nodes`` x
``--ntasks-per-node``, the MPI launcher's name); how the ranks start is the backend's own
(:meth:`~sbt_batch.batch.backend.Backend.plan_ranks`): Slurm puts ``srun --mpi=pmix`` (or ``mpirun``
inside the allocation) before the task wrapper, HTCondor runs ``train --ranks T`` on one machine or a
parallel-universe job over several, the local backend runs ``train --ranks T`` here.
(``train --ranks N`` on one machine without a scheduler is :mod:`sbt_batch.cnn.launch`.)
"""

from __future__ import annotations

from typing import Any

from sbt_batch.batch.backend import DEFAULT_BACKEND, get_backend
from sbt_batch.batch.resources import check_count
from sbt_batch.common.errors import UserError

BATCH_LAUNCHERS = ("srun", "mpirun")


def plan_ranks(backend: str, nodes: int | None = None, ntasks_per_node: int | None = None,
               ntasks: int | None = None, gpus_per_node: int | None = None, mpi: str = "srun") -> dict[str, Any]:
    """How ``submit train`` starts several ranks on ``backend``: SubmitOptions fields plus extra train arguments.

    Returns ``{"launcher": [...], "nodes": N, "ntasks": total, "gpus": G, "train_args": [...]}`` and, when the
    backend needs it, ``cpus_min``; one rank on one node needs nothing (the backend is not asked).
    """
    for value, option in ((nodes, "--nodes"), (ntasks_per_node, "--ntasks-per-node"), (ntasks, "--ntasks")):
        check_count(value, option, 1)
    check_count(gpus_per_node, "--gpus-per-node", 0)
    if mpi not in BATCH_LAUNCHERS:
        raise UserError(f"--mpi-launcher: unknown launcher '{mpi}' (choose from {', '.join(BATCH_LAUNCHERS)})")
    n_nodes = nodes or 1
    if ntasks is not None and ntasks_per_node is not None and ntasks != n_nodes * ntasks_per_node:
        raise UserError(f"--ntasks {ntasks}: differs from --nodes {n_nodes} x --ntasks-per-node {ntasks_per_node}")
    per_node = ntasks_per_node or (gpus_per_node if gpus_per_node and ntasks is None else None)
    total = ntasks if ntasks is not None else n_nodes * (per_node or 1)
    plan: dict[str, Any] = {"launcher": [], "nodes": nodes, "ntasks": None, "gpus": gpus_per_node, "train_args": []}
    if total <= 1 and n_nodes <= 1:
        return plan
    plan.update(get_backend(backend).plan_ranks(total, n_nodes, mpi))
    return plan


def train_submit_settings(opts: dict[str, Any], argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``submit train``: turn --nodes/--ntasks/--ntasks-per-node/--gpus-per-node/--mpi-launcher into submit options.

    Returns the submit options (with ``launcher``, ``nodes``, ``ntasks``, ``gpus`` set) and the train argv.
    """
    from sbt_batch.batch.profiles import load_profile

    opts = dict(opts)
    nodes, ntasks = opts.pop("nodes", None), opts.pop("ntasks", None)
    per_node, gpus_per_node = opts.pop("ntasks_per_node", None), opts.pop("gpus_per_node", None)
    mpi = opts.pop("mpi_launcher", None) or BATCH_LAUNCHERS[0]
    if any(a == "--ranks" or a.startswith("--ranks=") for a in argv) and (nodes or ntasks or per_node):
        raise UserError("--ranks: give the rank count to submit (--ntasks or --nodes/--ntasks-per-node), not to train")
    profile = load_profile(opts.get("site"))
    backend = opts.get("backend") or profile.get("backend") or DEFAULT_BACKEND
    plan = plan_ranks(backend, nodes, per_node, ntasks, gpus_per_node, mpi)
    if (plan["nodes"] or 1) > 1:  # settings a multi-node job cannot run with: one line before the run exists
        get_backend(backend).check_ranks(plan["nodes"], profile, opts.get("image") or profile.get("image"))
    opts.update(launcher=plan["launcher"], nodes=plan["nodes"], ntasks=plan["ntasks"])
    if gpus_per_node is not None:
        opts["gpus"] = gpus_per_node
    if plan.get("cpus_min") and (opts.get("cpus") or 0) < plan["cpus_min"]:
        opts["cpus"] = plan["cpus_min"]
    return opts, [*argv, *plan["train_args"]]
