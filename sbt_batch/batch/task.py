"""The task wrapper every batch job runs: ``sbt-batch task run RUN_DIR INDEX``.

It executes the task's sbt-batch argv in a child process with stdout/stderr in ``tasks/<i>/``
and records ``tasks/<i>/state.json`` atomically: ``running`` at start (host, pid, attempt,
job id), then ``completed`` / ``failed`` (exit code) or ``killed`` (SIGTERM from a cancel,
a time limit or preemption).  The files of an earlier attempt move to ``tasks/<i>/attempt-<n>/``.

Under a multi-rank launcher (srun, mpirun) placed *before* the wrapper, only rank 0 records
state; the other ranks just run the command.

A command that checkpointed after SIGTERM (exit 75) runs again as the run's backend says
(:attr:`~sbt_batch.batch.backend.Backend.requeue`): the wrapper asks the scheduler to requeue the job,
or leaves it to the scheduler, or (no requeue) retries it in place.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbt_batch.batch.backend import REQUEUE_NONE, REQUEUE_SCHEDULER, Backend, get_backend
from sbt_batch.batch.run import (
    CANCEL_MARKER,
    STATE,
    T_COMPLETED,
    T_FAILED,
    T_KILLED,
    T_REQUEUED,
    T_RUNNING,
    Run,
    default_sbt_command,
    utc_now,
)
from sbt_batch.common.errors import UserError
from sbt_batch.common.launchenv import current_rank, scheduler_job_id

log = logging.getLogger("sbt_batch")

_KEEP_FILES = ("stdout", "stderr", STATE)  # plus try-<n>.stdout/.stderr of retried tries


def archive_previous(run: Run, index: int, attempt: int) -> None:
    """Move the files of an older attempt into ``tasks/<i>/attempt-<n>/``."""
    old = run.read_state(index)
    if not old or old.get("attempt", 1) >= attempt:
        return
    target = run.task_dir(index) / f"attempt-{old.get('attempt', 1)}"
    target.mkdir(exist_ok=True)
    names = [*_KEEP_FILES, *(n for n in os.listdir(run.task_dir(index)) if n.startswith("try-"))]
    for name in names:
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


PR_SET_PDEATHSIG = 1
EXIT_REQUEUE = 75  # the command checkpointed after SIGTERM: requeue it and resume (sbt_batch.common.errors.EXIT_REQUEUE)
BAD_INPUT_CODES = (1, 2)  # with a one-line `error:` as the last stderr line: never retried


def _prctl_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover  (not Linux)
        pass


def _child_setup() -> None:
    """In the command's process, before exec: die with the wrapper (SIGKILL when it dies)."""
    _prctl_pdeathsig(signal.SIGKILL)


def start_watchdog(pgid: int) -> int | None:
    """Fork a watchdog that SIGKILLs process group ``pgid`` when this wrapper dies (kill -9, node loss); return its pid."""
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # pragma: no cover
        return None
    if pid:
        return pid
    try:  # the watchdog: no Python-level cleanup, only wait for the parent's death
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)  # a scheduler's SIGTERM to every process is the wrapper's to handle
        signal.signal(signal.SIGUSR2, lambda *_: None)
        _prctl_pdeathsig(signal.SIGUSR2)
        while os.getppid() == parent:
            signal.sigtimedwait([signal.SIGUSR2], 5.0) if hasattr(signal, "sigtimedwait") else time.sleep(1)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    finally:
        os._exit(0)


def _stop_watchdog(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def _stderr_lines(path: Path, limit: int = 8192) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - limit))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def is_bad_input(rc: int, lines: list[str]) -> bool:
    """Exit 1 or 2 whose stderr ends with one `error:` line and holds no traceback: bad input, not worth a retry."""
    return rc in BAD_INPUT_CODES and bool(lines) and lines[-1].startswith("error:") and not any(line.startswith("Traceback") for line in lines)


def failure_cause(rc: int, sig: int | None, lines: list[str]) -> str:
    """A short cause in words for a failed try: the signal, or the last line of stderr."""
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}" + (" (out of memory, node loss or kill -9?)" if sig == signal.SIGKILL else "")
    if rc == EXIT_REQUEUE:
        return "checkpointed after SIGTERM (exit 75)"
    last = lines[-1] if lines else "no message on stderr"
    return f"exit {rc}: {last[:160]}"


def cancel_requested(run: Run) -> bool:
    """`sbt-batch cancel` marks the run before stopping its jobs: a task stopped then is not requeued."""
    return (run.path / "logs" / CANCEL_MARKER).exists()


def scheduler_of(run: Run) -> Backend | None:
    """The run's backend, which says how a checkpointed task runs again; None (no requeue) when it cannot be loaded here."""
    try:
        return get_backend(run.backend)
    except UserError as exc:
        log.warning("task: %s; a task that checkpoints is not requeued", exc)
        return None


def run_task(run_dir: str | Path, index: int) -> int:
    """Run task ``index`` of the run in ``run_dir``, record its state, retry it (``--retries``), and return its exit code."""
    run = Run.open(run_dir)
    task = run.task(index)
    argv = task_argv(run, index)
    cwd = task_cwd(run)
    if current_rank() != 0:  # not the recording rank: just run the command
        return subprocess.call(argv, cwd=cwd)
    attempt = max(1, run.attempt_of(index))
    task_dir = run.task_dir(index)
    task_dir.mkdir(parents=True, exist_ok=True)
    previous = run.read_state(index)
    history: list[dict[str, Any]] = []
    resume = False
    if previous and previous.get("attempt") == attempt and previous.get("state") == T_REQUEUED:
        history = list(previous.get("history") or [])  # the scheduler ran this job again after a requeue
        resume = previous.get("exit_code") == EXIT_REQUEUE
    else:
        archive_previous(run, index, attempt)
    retries = int(run.resources.get("retries") or 0)
    scheduler = scheduler_of(run)
    requeue = scheduler.requeue if scheduler is not None else REQUEUE_NONE
    state: dict[str, Any] = {
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
        "retries": retries,
        "history": history,
    }
    try:
        import psutil

        state["pid_created"] = psutil.Process().create_time()
    except Exception:  # pragma: no cover
        pass
    t0 = time.monotonic()
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        child = _CHILD[0] if _CHILD else None
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(stop_signal, forward)
    while True:
        command = list(argv)
        if resume and task.meta.get("resume_argv"):
            command = [*default_sbt_command(), *task.meta["resume_argv"]]
        state["try"] = len(history) + 1
        state["command"] = command[len(default_sbt_command()):] if resume else None
        run.write_state(index, state)
        rc, sig = _run_once(command, cwd, task_dir, received, state, run, index, lambda c: _set_child(c))
        lines = _stderr_lines(task_dir / "stderr")
        if rc == 0 and not received:
            state["state"] = T_COMPLETED
            break
        cause = failure_cause(rc, sig, lines)
        tries_left = retries - len(history)
        history.append({"try": len(history) + 1, "exit_code": rc, "signal": sig, "cause": cause, "finished": utc_now()})
        if received:  # the scheduler (or cancel) stopped the job
            if rc == EXIT_REQUEUE and tries_left > 0 and not cancel_requested(run) and requeue != REQUEUE_NONE:
                state.update(state=T_REQUEUED, exit_code=rc)
                run.write_state(index, state)
                # the scheduler starts it again by itself (condor: max_retries/eviction), or is asked to (slurm)
                if requeue == REQUEUE_SCHEDULER or (scheduler is not None and scheduler.requeue_job()):
                    return rc
            state["state"] = T_KILLED
            state["signal"] = received[0]
            break
        if rc == EXIT_REQUEUE and tries_left > 0 and requeue == REQUEUE_SCHEDULER and not cancel_requested(run):
            state.update(state=T_REQUEUED, exit_code=rc)  # max_retries starts the job again; it resumes there
            break
        if tries_left <= 0 or is_bad_input(rc, lines):
            if sig:
                state["state"], state["signal"] = T_KILLED, sig
            else:
                state["state"] = T_FAILED
            break
        resume = rc == EXIT_REQUEUE  # retry here: resume a checkpoint, or run the command again
        _archive_try(task_dir, len(history))
        log.info("task %d: try %d failed (%s); retrying", index, len(history), cause)
    state["exit_code"] = rc
    state["finished"] = utc_now()
    state["duration"] = round(time.monotonic() - t0, 3)
    run.write_state(index, state)
    return int(state["exit_code"])


def run_packed(run_dir: str | Path, map_file: str | Path, line: int) -> int:
    """A packed job: run the tasks listed on line ``line`` of ``map_file`` one after another (skip those already done)."""
    run = Run.open(run_dir)
    try:
        indices = [int(w) for w in Path(map_file).read_text().splitlines()[line].split()]
    except (OSError, IndexError, ValueError) as exc:
        raise UserError(f"{map_file}: no task list on line {line} ({exc})") from None
    code = 0
    for index in indices:
        state = run.read_state(index)
        if state and state.get("state") == T_COMPLETED and state.get("attempt") == max(1, run.attempt_of(index)):
            continue  # a requeued pack: this task already completed in this attempt
        rc = run_task(run_dir, index)
        code = code or rc
        state = run.read_state(index) or {}
        if state.get("state") in (T_KILLED, T_REQUEUED):  # the job is being stopped: leave the rest
            break
    return code


_CHILD: list[subprocess.Popen[bytes]] = []


def _set_child(child: subprocess.Popen[bytes]) -> None:
    _CHILD[:] = [child]


def _archive_try(task_dir: Path, number: int) -> None:
    """Keep the stdout/stderr of a failed try as ``try-<n>.stdout``/``.stderr`` before the next one."""
    for name in ("stdout", "stderr"):
        src = task_dir / name
        if src.exists():
            os.replace(src, task_dir / f"try-{number}.{name}")


def _run_once(command: list[str], cwd: str | None, task_dir: Path, received: list[int], state: dict[str, Any], run: Run,
              index: int, on_start: Callable[[subprocess.Popen[bytes]], None]) -> tuple[int, int | None]:
    """Run the command once in its own process group, watched; return (exit code, killing signal or None)."""
    watchdog = None
    with open(task_dir / "stdout", "ab") as out, open(task_dir / "stderr", "ab") as err:
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                                     process_group=0, preexec_fn=_child_setup)
        except OSError as exc:
            err.write(f"error: cannot start {command[0]}: {exc}\n".encode())
            return 127, None
        on_start(child)
        state["child_pgid"] = child.pid
        run.write_state(index, state)
        watchdog = start_watchdog(child.pid)
        if received:  # a signal arrived before the child existed
            child.send_signal(signal.SIGTERM)
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover
                continue
    try:  # the command's own children (dask workers, ranks) end with it
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    _stop_watchdog(watchdog)
    if rc < 0:
        return 128 - rc, -rc
    return rc, None
