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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sbt_batch.common.console import log
from sbt_batch.common.errors import EXIT_REQUEUE, UserError
from sbt_batch.common.optional import install_hint, require

LAUNCHERS = ("gloo", "mpi")
ROOT_MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpi_root_env() -> dict[str, str]:
    """The variables Open MPI needs to start as root (empty for other users)."""
    return dict(ROOT_MPI_ENV) if os.geteuid() == 0 else {}


def check_horovod() -> None:
    """Raise a one-line UserError unless Horovod is installed in this Python (imported: a broken one fails here)."""
    require("horovod", "--ranks")


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        hint = "install Open MPI (apt-get install openmpi-bin)" if name == "mpirun" else install_hint("horovod")
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
                 spec: str | Path | None = None, resume: str | Path | None = None,
                 notify: Callable[[str], None] | None = None) -> bool:
    """Start ``sbt-batch ARGV`` on ``ranks`` local ranks and wait; False when this process should train itself.

    ``notify`` receives the line that says how the ranks start (the CLI prints it on stderr).
    """
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
    line = f"starting {ranks} ranks: {' '.join(cmd[: cmd.index(sys.executable)])} ..."
    log.info(line)
    if notify is not None:
        notify(line)
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
