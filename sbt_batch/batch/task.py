"""The task wrapper every batch job runs: ``sbt-batch task run RUN_DIR INDEX``.

It executes the task's sbt-batch argv in a child process with stdout/stderr in ``tasks/<i>/``
and records ``tasks/<i>/state.json`` atomically: ``running`` at start (host, pid, attempt,
job id), then ``completed`` / ``failed`` (exit code) or ``killed`` (SIGTERM from a cancel,
a time limit or preemption).  The files of an earlier attempt move to ``tasks/<i>/attempt-<n>/``.

Under a multi-rank launcher (srun, mpirun) placed *before* the wrapper, only rank 0 records
state; the other ranks just run the command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from sbt_batch.batch.backend import default_sbt_command
from sbt_batch.batch.run import STATE, T_COMPLETED, T_FAILED, T_KILLED, T_RUNNING, Run, utc_now

_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
_KEEP_FILES = ("stdout", "stderr", STATE)


def current_rank() -> int:
    """This process's rank under an MPI/Slurm launcher (0 when not launched by one)."""
    for var in _RANK_VARS:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 0


def scheduler_job_id() -> str | None:
    """The scheduler's id for this job, from the environment (Slurm, HTCondor, local runner)."""
    env = os.environ
    if env.get("SBT_BATCH_JOB_ID"):
        return env["SBT_BATCH_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    return None


def _archive_previous(run: Run, index: int, attempt: int) -> None:
    """Move the files of an older attempt into ``tasks/<i>/attempt-<n>/``."""
    old = run.read_state(index)
    if not old or old.get("attempt", 1) >= attempt:
        return
    target = run.task_dir(index) / f"attempt-{old.get('attempt', 1)}"
    target.mkdir(exist_ok=True)
    for name in _KEEP_FILES:
        src = run.task_dir(index) / name
        if src.exists():
            os.replace(src, target / name)


def task_argv(run: Run, index: int) -> list[str]:
    """The full command the wrapper executes for task ``index``."""
    return [*default_sbt_command(), *run.task(index).argv]


def task_cwd(run: Run) -> str | None:
    """Where tasks run: the submit directory when it exists here, else None (the job's directory)."""
    workdir = run.manifest.get("workdir")
    return workdir if workdir and os.path.isdir(workdir) else None


def run_task(run_dir: str | Path, index: int) -> int:
    """Run task ``index`` of the run in ``run_dir``, record its state, and return its exit code."""
    run = Run.open(run_dir)
    argv = task_argv(run, index)
    cwd = task_cwd(run)
    if current_rank() != 0:  # not the recording rank: just run the command
        return subprocess.call(argv, cwd=cwd)
    attempt = max(1, run.attempt_of(index))
    task_dir = run.task_dir(index)
    task_dir.mkdir(parents=True, exist_ok=True)
    _archive_previous(run, index, attempt)
    state = {
        "index": index,
        "attempt": attempt,
        "state": T_RUNNING,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": scheduler_job_id(),
        "started": utc_now(),
        "finished": None,
        "duration": None,
        "exit_code": None,
        "signal": None,
    }
    run.write_state(index, state)
    t0 = time.monotonic()
    received: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, forward)
    with open(task_dir / "stdout", "wb") as out, open(task_dir / "stderr", "wb") as err:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
        except OSError as exc:
            err.write(f"error: cannot start {argv[0]}: {exc}\n".encode())
            rc = 127
        else:
            if received:  # a signal arrived before the child existed
                child.send_signal(signal.SIGTERM)
            while True:
                try:
                    rc = child.wait()
                    break
                except InterruptedError:  # pragma: no cover
                    continue
    if received:
        state["state"] = T_KILLED
        state["signal"] = received[0]
    elif rc < 0:
        state["state"] = T_KILLED
        state["signal"] = -rc
    else:
        state["state"] = T_COMPLETED if rc == 0 else T_FAILED
    state["exit_code"] = rc if rc >= 0 else 128 - rc
    state["finished"] = utc_now()
    state["duration"] = round(time.monotonic() - t0, 3)
    run.write_state(index, state)
    return state["exit_code"]
