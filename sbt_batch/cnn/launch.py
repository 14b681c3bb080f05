"""``sbt-batch train --ranks N`` on one machine: start N Horovod ranks of the same command.

The parent process checks the options and the data (one-line errors before any rank starts),
then re-runs its own command line under ``horovodrun --gloo`` or ``mpirun``. Each rank sees
the launcher's environment (:func:`sbt_batch.common.launchenv.launch_info`), so the same ``--ranks N`` option
does not launch again there. SIGTERM/SIGINT reach the ranks, which checkpoint and exit 75.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sbt_batch.common.console import err_console, log
from sbt_batch.common.errors import EXIT_REQUEUE, UserError

LAUNCHERS = ("gloo", "mpi")
ROOT_MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpi_root_env() -> dict[str, str]:
    """The variables Open MPI needs to start as root (empty for other users)."""
    return dict(ROOT_MPI_ENV) if os.geteuid() == 0 else {}


def check_horovod() -> None:
    """Raise a one-line UserError unless Horovod and horovodrun are installed in this Python."""
    try:
        import horovod
    except ImportError:
        raise UserError("--ranks: Horovod is not installed in this Python; "
                        "build and install it with: bash scripts/build-horovod.sh") from None


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        hint = "install Open MPI (apt-get install openmpi-bin)" if name == "mpirun" else "bash scripts/build-horovod.sh"
        raise UserError(f"--launcher: '{name}' not found; {hint}")
    return found


def launcher_argv(ranks: int, launcher: str, command: Sequence[str]) -> list[str]:
    """The argv that starts ``command`` on ``ranks`` local ranks with ``launcher`` (gloo | mpi)."""
    if launcher == "gloo":
        return [_tool("horovodrun"), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo",
                "--network-interfaces", "lo", *command]
    if launcher == "mpi":
        argv = [_tool("mpirun"), "-np", str(ranks), "-H", f"localhost:{ranks}", "--bind-to", "none",
                "--map-by", "slot", "--mca", "btl", "self,vader", "--mca", "oob_tcp_if_include", "lo",
                "--mca", "mpi_yield_when_idle", "1"]
        if ranks > (os.cpu_count() or 1):
            argv.append("--oversubscribe")
        return [*argv, *command]
    raise UserError(f"--launcher: unknown launcher '{launcher}' (choose from {', '.join(LAUNCHERS)})")


def rank_env(ranks: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the ranks: Open MPI's run-as-root switches and a fair share of CPU threads each."""
    env = dict(os.environ if base is None else base)
    env.update(mpi_root_env())
    env.setdefault("PYTHONUNBUFFERED", "1")
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(name, threads)
    env.setdefault("TF_NUM_INTEROP_THREADS", "1" if ranks > 1 else "2")
    return env


def training_events(options: dict[str, Any], spec: str | Path | None, resume: str | Path | None) -> tuple[int, int]:
    """(training events, batch size) of the run that ``options`` describe, without loading TensorFlow."""
    from sbt_batch.cnn import prepare as D
    from sbt_batch.cnn.config import TrainConfig, resolve_config
    from sbt_batch.common.rundir import RunDir

    if resume:
        run = RunDir(Path(resume)).require("config")
        stored = {k: v for k, v in run.read_config().items() if k in TrainConfig.keys()}
        split, _files = D.load_split(run.split)
        return len(split["train"]), int(options.get("batch_size") or stored.get("batch_size") or 64)
    cfg = resolve_config(None, spec, **options)
    index = D.EventIndex(D.open_sources(cfg.signal, cfg.background))
    ids = D.limit_events(index.labels, cfg.max_events, cfg.seed)
    return len(D.make_split(len(ids), D.parse_split(cfg.split), cfg.seed)["train"]), cfg.batch_size


def check_shards(ranks: int, n_train: int, batch_size: int) -> None:
    """Each rank needs at least one full batch of training events: a one-line error otherwise."""
    shards = n_train // batch_size
    if ranks > max(shards, 1) or n_train < ranks:
        raise UserError(f"--ranks {ranks}: more ranks than data shards: the training split has {n_train} events, "
                        f"{shards} batch(es) of {batch_size}; use at most {max(shards, 1)} ranks or a smaller --batch-size")


def in_rank() -> bool:
    """True when this process is already one of several launched ranks."""
    from sbt_batch.common.launchenv import launch_info

    info = launch_info()
    return info is not None and info.size > 1


def launch_local(ranks: int, launcher: str, argv: Sequence[str], options: dict[str, Any],
                 spec: str | Path | None = None, resume: str | Path | None = None) -> bool:
    """Start ``sbt-batch ARGV`` on ``ranks`` local ranks and wait; False when this process should train itself."""
    from sbt_batch.common.launchenv import launch_info

    if ranks < 1:
        raise UserError(f"--ranks: must be at least 1, got {ranks}")
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher: unknown launcher '{launcher}' (choose from {', '.join(LAUNCHERS)})")
    info = launch_info()
    if info is not None and info.size > 1:
        if info.size != ranks:
            raise UserError(f"--ranks {ranks}: this process is already rank {info.rank} of {info.size} "
                            f"started by {info.launcher}; drop --ranks or make them agree")
        return False
    if ranks == 1:
        return False
    check_horovod()
    n_train, batch = training_events(options, spec, resume)
    check_shards(ranks, n_train, batch)
    cmd = launcher_argv(ranks, launcher, [sys.executable, "-m", "sbt_batch", *argv])
    err_console.print(f"starting {ranks} ranks: {' '.join(cmd[: cmd.index(sys.executable)])} ...", highlight=False, soft_wrap=True)
    rc, signalled = run_forwarding(cmd, rank_env(ranks))
    if rc == 0:
        return True
    if signalled:
        raise UserError("SIGTERM: the ranks saved a checkpoint and stopped; continue with --resume RUN_DIR "
                        "(any number of ranks)", exit_code=EXIT_REQUEUE)
    raise UserError(f"training failed on {ranks} ranks ({launcher} launcher exit code {rc}); "
                    "see the rank messages above", exit_code=rc if 0 < rc < 126 else 1)


def _rank_processes(parent_pid: int) -> list[Any]:
    """The launched ranks: descendants of the launcher that run ``-m sbt_batch``."""
    import psutil

    try:
        kids = psutil.Process(parent_pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for p in kids:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "-m" in cmd and "sbt_batch" in cmd:
            found.append(p)
    return found


def run_forwarding(cmd: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run the launcher; SIGTERM/SIGINT go straight to the ranks (not the launcher) so they checkpoint.

    Returns (exit code, whether a signal was forwarded).
    """
    proc = subprocess.Popen(cmd, env=env)
    got: dict[str, int] = {}

    def forward(signum: int, _frame: Any) -> None:
        got["signal"] = signum
        ranks = _rank_processes(proc.pid)
        log.info("forwarding signal %d to %d ranks", signum, len(ranks))
        for p in ranks:
            try:
                p.send_signal(signal.SIGTERM)
            except Exception:
                pass
        if not ranks:
            proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return rc, "signal" in got


# --------------------------------------------------------------------------- batch jobs

BATCH_LAUNCHERS = ("srun", "mpirun")


def batch_plan(backend: str, nodes: int | None = None, ntasks_per_node: int | None = None,
               ntasks: int | None = None, gpus_per_node: int | None = None, mpi: str = "srun") -> dict[str, Any]:
    """How ``submit train`` starts several ranks: SubmitOptions fields plus extra train arguments.

    Returns ``{"launcher": [...], "nodes": N, "ntasks": total, "gpus": G, "train_args": [...]}``:
    Slurm puts ``srun --mpi=pmix`` (or ``mpirun`` inside the allocation) before the task wrapper; HTCondor
    runs one job on one machine that starts its ranks itself (``train --ranks T``), or with ``--nodes N``
    a parallel-universe job whose node wrapper starts T ranks per node (:mod:`sbt_batch.batch.backends.condor_parallel`).
    """
    from sbt_batch.batch.resources import check_count

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
    if backend == "slurm":
        plan["ntasks"] = total
        plan["launcher"] = (["srun", "--mpi=pmix", "--kill-on-bad-exit=1"] if mpi == "srun" else
                            ["mpirun", "--bind-to", "none", "--map-by", "slot",
                             *(["--allow-run-as-root"] if os.geteuid() == 0 else [])])
    elif backend == "condor":
        if n_nodes > 1:  # parallel universe: `sbt-batch task condor-node` starts each node's ranks (Gloo)
            if total % n_nodes:
                raise UserError(f"--ntasks {total}: HTCondor starts the same number of ranks on each of the "
                                f"--nodes {n_nodes}; use a multiple of {n_nodes} or --ntasks-per-node")
            plan["ntasks"] = total
            plan["cpus_min"] = total // n_nodes
            return plan
        plan["train_args"] = ["--ranks", str(total), "--launcher", "gloo"]
        plan["cpus_min"] = total
    elif backend == "local":
        if n_nodes > 1:
            raise UserError(f"--nodes {n_nodes}: the local backend runs on this machine only")
        plan["train_args"] = ["--ranks", str(total), "--launcher", "gloo"]
    else:
        raise UserError(f"--backend: unknown backend '{backend}'")
    return plan


def train_submit_settings(opts: dict[str, Any], argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``submit train``: turn --nodes/--ntasks/--ntasks-per-node/--gpus-per-node/--mpi-launcher into submit options.

    Returns the submit options (with ``launcher``, ``nodes``, ``ntasks``, ``gpus`` set) and the train argv.
    """
    from sbt_batch.batch.profiles import load_profile

    opts = dict(opts)
    nodes, ntasks = opts.pop("nodes", None), opts.pop("ntasks", None)
    per_node, gpus_per_node = opts.pop("ntasks_per_node", None), opts.pop("gpus_per_node", None)
    mpi = opts.pop("mpi_launcher", None) or "srun"
    if any(a == "--ranks" or a.startswith("--ranks=") for a in argv) and (nodes or ntasks or per_node):
        raise UserError("--ranks: give the rank count to submit (--ntasks or --nodes/--ntasks-per-node), not to train")
    profile = load_profile(opts.get("site"))
    backend = opts.get("backend") or profile.get("backend") or "local"
    plan = batch_plan(backend, nodes, per_node, ntasks, gpus_per_node, mpi)
    if backend == "condor":  # settings a parallel-universe job cannot run with: one line before the run exists
        from sbt_batch.batch.backends.condor import check_parallel

        check_parallel(plan["nodes"] or 1, profile.get("condor") or {}, opts.get("image") or profile.get("image"))
    opts.update(launcher=plan["launcher"], nodes=plan["nodes"], ntasks=plan["ntasks"])
    if gpus_per_node is not None:
        opts["gpus"] = gpus_per_node
    if plan.get("cpus_min") and (opts.get("cpus") or 0) < plan["cpus_min"]:
        opts["cpus"] = plan["cpus_min"]
    return opts, [*argv, *plan["train_args"]]
