"""Local backend (the default): a detached runner process executes the tasks in a process pool.

``submit`` starts ``python -m sbt_batch.batch.backends.local RUN_DIR SUBMISSION`` in its own session, so
it survives the submitting command; it runs up to ``max_running`` (default: CPUs / cpus per task)
task wrappers at a time.  Job ids are ``local<runner pid>_<index>``.  ``query`` looks at the
runner process (a zombie counts as dead) and the task files; ``cancel`` leaves a marker file and
sends SIGTERM to the runner, which stops its running tasks (they record ``killed``) and starts
no more.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sbt_batch.batch.backend import CANCELLED, FAILED, PENDING, RUNNING, Backend, JobState, register_backend
from sbt_batch.batch.profiles import backend_defaults
from sbt_batch.batch.render import container_prefix, shell_value
from sbt_batch.batch.run import FINAL_TASK_STATES, T_RUNNING, Run
from sbt_batch.common.errors import UserError


def _cancel_marker(run: Run, number: int) -> Path:
    return run.path / "logs" / f"local-{number}.cancelled"


def _exit_file(run: Run, number: int) -> Path:
    return run.path / "logs" / f"local-{number}.exit"


def _exit_codes(run: Run, number: int) -> dict[int, int]:
    """Exit codes of the task wrappers the runner of submission ``number`` saw end ("INDEX CODE" lines)."""
    try:
        lines = _exit_file(run, number).read_text().split("\n")
    except OSError:
        return {}
    return {int(a): int(b) for a, _, b in (line.partition(" ") for line in lines) if a.isdigit() and b.lstrip("-").isdigit()}


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, was created at ``create_time``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return False
        return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def container_runtime(run: Run) -> str:
    """The runtime for a local job with an image: the configured one, else apptainer or podman on PATH."""
    wanted = run.manifest.get("container_runtime")
    candidates = [wanted] if wanted else list(backend_defaults("local")["container_runtimes"])
    for name in candidates:
        if shutil.which(name):
            return name
    raise UserError(f"--image: the local backend needs {wanted or 'apptainer or podman'} on PATH to run an image; none found")


def wrapper_command(run: Run, index: int) -> list[str]:
    """The full command that runs task ``index`` locally (container prefix + task wrapper)."""
    image = run.manifest.get("image")
    prefix: list[str] = []
    if image:
        binds = list(run.manifest.get("binds") or [])
        runtime = container_runtime(run)
        if runtime == "podman":  # apptainer binds the working directory itself; podman needs every path spelled out
            task = run.task(index)
            extra = [str(run.path), run.manifest.get("workdir")] + [os.path.dirname(p) for p in task.inputs + task.outputs]
            binds += sorted({b for b in extra if b and os.path.isdir(b)} - set(binds))
        prefix = container_prefix(runtime, image, binds, run.resources.get("gpus") or 0)
    return [*(run.manifest.get("launcher") or []), *prefix, *LocalBackend().task_command(run, index)]


@register_backend("local")
class LocalBackend(Backend):
    """Run tasks on this machine, in a detached process pool."""

    script_name = "local.sh"

    def plan_ranks(self, total: int, nodes: int, mpi: str) -> dict[str, Any]:
        """One machine: the task runs ``train --ranks T`` (Gloo), which starts the ranks itself."""
        if nodes > 1:
            raise UserError(f"--nodes {nodes}: the local backend runs on this machine only")
        return {"train_args": ["--ranks", str(total), "--launcher", "gloo"]}

    def render(self, run: Run, indices: Sequence[int]) -> str:
        """A shell script equivalent to what the runner does (the runner adds pooling and cancel)."""
        workers = pool_size(run)
        lines = [
            "#!/bin/sh",
            f"# sbt-batch local run {shell_value(run.name)}: {len(indices)} tasks, up to {workers} at a time,",
            "# executed by a detached runner: python -m sbt_batch.batch.backends.local RUN_DIR SUBMISSION",
        ]
        for i in indices:
            lines.append(shell_value(wrapper_command(run, i)))
        return "\n".join(lines) + "\n"

    def submit(self, run: Run, indices: Sequence[int]) -> dict[int, str]:
        """Start the detached runner for the current submission."""
        import psutil

        if run.manifest.get("image"):
            container_runtime(run)
        if run.manifest.get("after") and run.manifest["after"].get("backend") not in (None, "local"):
            raise UserError("--after: the local backend can only wait for runs of the local backend")
        number = run.submissions[-1]["number"] if run.submissions else 1
        script = run.write_script(self.script_name_for(run), self.render(run, indices))
        log = run.path / "logs" / f"local-{number}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sbt_batch.batch.backends.local", str(run.path), str(number)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=run.path,
            )
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:  # pragma: no cover  (exited at once)
            created = None
        if run.submissions:
            run.submissions[-1]["backend"] = {"pid": proc.pid, "create_time": created, "log": f"logs/{log.name}"}
            run.submissions[-1]["script"] = f"scripts/{script.name}"
        return {i: f"local{proc.pid}_{i}" for i in indices}

    def query(self, run: Run, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Ask the runner processes (no scheduler): pending/running while the runner lives, cancelled after cancel."""
        records = {s["backend"].get("pid"): s for s in run.submissions if s.get("backend", {}).get("pid")}
        alive = {pid: process_alive(pid, rec["backend"].get("create_time")) for pid, rec in records.items()}
        out: dict[str, JobState] = {}
        exits: dict[int, dict[int, int]] = {}
        for jid in job_ids:
            head, _, idx = jid.partition("_")
            pid = int(head.removeprefix("local")) if head.startswith("local") and head[5:].isdigit() else None
            rec = records.get(pid)
            if rec is None or not idx.isdigit():
                continue
            index = int(idx)
            marker = _cancel_marker(run, rec["number"])
            state = run.read_state(index)
            current = state if state and state.get("attempt", 1) >= run.attempt_of(index) else None
            if alive[pid]:
                if current and current["state"] == T_RUNNING:
                    out[jid] = JobState(RUNNING)
                elif current is None:
                    out[jid] = JobState(CANCELLED if marker.exists() else PENDING)
            elif marker.exists() and (current is None or current["state"] not in FINAL_TASK_STATES):
                out[jid] = JobState(CANCELLED, None, marker.read_text().strip())
            elif current is None:
                codes = exits.setdefault(rec["number"], _exit_codes(run, rec["number"]))
                if index in codes:  # the wrapper ended without writing state.json (e.g. the container did not start)
                    out[jid] = JobState(FAILED, codes[index], f"see logs/local-{rec['number']}.log")
        return out

    def cancel(self, run: Run, job_ids: Sequence[str]) -> None:
        """Mark the submissions cancelled and SIGTERM their runners."""
        pids = {int(j.partition("_")[0].removeprefix("local")) for j in job_ids if j.startswith("local")}
        for rec in run.submissions:
            pid = rec.get("backend", {}).get("pid")
            if pid in pids:
                _cancel_marker(run, rec["number"]).write_text("cancelled by user\n")
                if process_alive(pid, rec["backend"].get("create_time")):
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass


def pool_size(run: Run) -> int:
    """How many tasks run at once: --max-running, else CPUs // cpus per task."""
    res = run.resources
    if res.get("max_running"):
        return int(res["max_running"])
    return max(1, (os.cpu_count() or 1) // max(1, int(res.get("cpus") or 1)))


def _wait_for_dependency(run: Run, stop: threading.Event) -> str | None:
    """Block until the run named in ``after`` completed; return a reason to give up, or None."""
    from sbt_batch.batch.core import run_state, run_status

    after = run.manifest.get("after") or {}
    if not after.get("run"):
        return None
    other = Run.open(after["run"])
    while not stop.is_set():
        state = run_state(run_status(other))
        if state == "completed":
            return None
        if state != "active":
            return f"dependency {other.path.name} ended {state}"
        stop.wait(1.0)
    return "cancelled by user"


def _group_alive(pgid: int) -> bool:
    """True while a process (not a zombie) of process group ``pgid`` exists."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _reap_group(run: Run, index: int, timeout: float = 10.0) -> None:
    """SIGKILL the process group of task ``index``'s command (from state.json) and wait until it is gone."""
    state = run.read_state(index) or {}
    pgid = state.get("child_pgid")
    if not isinstance(pgid, int) or pgid <= 1:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
        if not _group_alive(pgid):
            return
        time.sleep(0.05)


def runner_main(run_dir: str, number: int) -> int:
    """Body of the detached runner: run the tasks of submission ``number`` in a pool."""
    run = Run.open(run_dir)
    record = next(s for s in run.submissions if s["number"] == number)
    stop = threading.Event()
    children: dict[int, subprocess.Popen[bytes]] = {}
    lock = threading.Lock()

    def on_term(_signum: int, _frame: object) -> None:
        stop.set()
        with lock:
            for child in children.values():
                try:
                    os.killpg(child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    reason = _wait_for_dependency(run, stop)
    if reason:
        _cancel_marker(run, number).write_text(reason + "\n")
        return 1

    def one(index: int) -> int:
        if stop.is_set():
            return -1
        env = {**os.environ, "SBT_BATCH_JOB_ID": f"local{os.getpid()}_{index}"}
        with lock:
            if stop.is_set():
                return -1
            child = subprocess.Popen(wrapper_command(run, index), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
            children[index] = child
        rc = child.wait()
        if rc < 0 or rc >= 128:  # the wrapper itself was killed: its command must be gone before the next task starts
            _reap_group(run, index)
        with lock:
            children.pop(index, None)
        with lock:
            # the runner's own log (logs/local-<n>.log is its stdout), then the exit codes query() reads
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} task {index} exit {rc}\n")
            sys.stdout.flush()
            with open(_exit_file(run, number), "a") as fh:
                fh.write(f"{index} {rc}\n")
        return rc

    with ThreadPoolExecutor(max_workers=pool_size(run)) as pool:
        list(pool.map(one, record["indices"]))
    return 0


if __name__ == "__main__":
    sys.exit(runner_main(sys.argv[1], int(sys.argv[2])))
