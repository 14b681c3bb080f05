"""What the batch commands do, as library functions: submit, status, resubmit, cancel, list runs.

``status`` merges each task's state.json with at most ONE scheduler query per run, made only
for tasks without a final state file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sbt_batch.batch.backend import ACTIVE_STATES, CANCELLED, COMPLETED, FAILED, TIMEOUT, Backend, JobState, get_backend
from sbt_batch.batch.run import CANCEL_MARKER, FINAL_TASK_STATES, T_KILLED, T_REQUEUED, T_RUNNING, Run, find_runs
from sbt_batch.common.errors import UserError

# Task states shown by `status` (task file merged with the scheduler's answer).
S_UNSUBMITTED = "unsubmitted"  # no successful submission contains the task
S_MISSING = "missing"  # submitted, but neither a state file nor a scheduler record exists
S_LOST = "lost"  # state file says running, the scheduler no longer knows the job
S_KILLED = "killed"
FAILED_LIKE = frozenset({FAILED, CANCELLED, TIMEOUT, S_KILLED, S_LOST})
MISSING_LIKE = frozenset({S_MISSING, S_UNSUBMITTED})
STATE_ORDER = ("completed", "running", "pending", "held", "failed", "timeout", "cancelled", "killed", "lost", "missing", "unsubmitted")


@dataclass
class TaskStatus:
    """One row of `status`: the merged state of a task."""

    index: int
    state: str
    attempt: int = 0
    exit_code: int | None = None
    host: str | None = None
    duration: float | None = None
    job_id: str | None = None
    reason: str = ""
    inputs: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # earlier failed tries of this attempt: exit code, signal, cause

    @property
    def active(self) -> bool:
        """Queued, held or running."""
        return self.state in ACTIVE_STATES


def submit_run(run: Run, backend: Backend | None = None, indices: Sequence[int] | None = None) -> dict[int, str]:
    """Submit ``indices`` (default all tasks) of ``run`` in one scheduler call; record the job ids."""
    backend = backend or get_backend(run.backend)
    indices = sorted(set(range(len(run.tasks)) if indices is None else indices))
    if not indices:
        raise UserError(f"{run.path}: nothing to submit")
    backend.check()
    (run.path / "logs" / CANCEL_MARKER).unlink(missing_ok=True)
    record = run.begin_submission(indices)
    try:
        job_ids = backend.submit(run, indices)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        run.fail_submission(record, message)
        raise
    run.finish_submission(record, job_ids)
    return job_ids


def _current_state(run: Run, index: int, attempt: int) -> dict | None:
    state = run.read_state(index)
    if state is None or state.get("attempt", 1) < attempt:
        return None
    return state


def wrapper_gone(state: dict) -> bool:
    """True when a ``running`` state file names a wrapper on this host whose process is gone (kill -9, crash)."""
    import socket

    if state.get("host") != socket.gethostname() or not state.get("pid"):
        return False
    import psutil

    try:
        proc = psutil.Process(int(state["pid"]))
        if state.get("pid_created") is not None and abs(proc.create_time() - float(state["pid_created"])) > 0.05:
            return True  # the pid now belongs to another process
        return proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, ValueError, TypeError):
        return False


def _describe_history(history: list[dict], final_state: str) -> str:
    """The cause of each failed try, for the reason column."""
    if not history:
        return ""
    causes = "; ".join(f"try {h.get('try')}: {h.get('cause')}" for h in history[-3:])
    more = f"{len(history) - 3} earlier, " if len(history) > 3 else ""
    return f"{len(history)} failed tr{'y' if len(history) == 1 else 'ies'} ({more}{causes})"


def _row(index: int, attempt: int, state: dict | None, job_id: str | None) -> TaskStatus:
    row = TaskStatus(index=index, state=S_UNSUBMITTED if job_id is None else S_MISSING, attempt=attempt, job_id=job_id)
    if state and state.get("state") == "damaged":
        row.reason = state.get("error", "state.json damaged")
        return row
    if state:
        row.state = state["state"]
        row.exit_code = state.get("exit_code")
        row.host = state.get("host")
        row.duration = state.get("duration")
        row.job_id = job_id or state.get("job_id")
        row.history = list(state.get("history") or [])
        if state["state"] == T_REQUEUED:
            row.state = "pending"
        row.reason = _describe_history(row.history, row.state)
    return row


def _merge(row: TaskStatus, state: dict | None, js: JobState | None) -> None:
    """Combine the task file (``state``) with the scheduler's answer (``js``) into ``row.state``."""
    if state and state.get("state") == "damaged":
        state = None  # the scheduler's answer decides; the reason names the damaged file
        if js is None or not js.active:
            row.state = S_LOST
            return
    if state and state["state"] in FINAL_TASK_STATES:
        return
    if state and state["state"] == T_KILLED:
        row.state = js.state if js and js.state in {CANCELLED, TIMEOUT} else S_KILLED
    elif state and state["state"] == T_REQUEUED:
        if js is not None and js.active:
            row.state = js.state
        else:
            row.state = js.state if js and js.state in {CANCELLED, TIMEOUT} else S_LOST
            row.reason = row.reason or "requeued after a checkpoint, but the scheduler no longer has the job"
    elif state and state["state"] == T_RUNNING:
        if js is not None and js.state in {CANCELLED, TIMEOUT}:
            row.state = js.state
        elif wrapper_gone(state):
            row.state, row.reason = S_LOST, "the task wrapper died without recording an exit code (killed?)"
        elif js is None:
            row.state, row.reason = S_LOST, "the task stopped without recording an exit code"
        elif js.active:
            row.state = "running"
        else:
            row.state = S_LOST
    elif js is not None:  # no state file for this attempt
        if js.active or js.state in {CANCELLED, TIMEOUT}:
            row.state = js.state
        else:
            row.state = FAILED
            row.reason = "the job ended before the task wrapper started (see logs/)"
        row.exit_code = js.exit_code if row.exit_code is None else row.exit_code
    if js and js.reason and not row.reason:
        row.reason = js.reason


def run_status(run: Run, backend: Backend | None = None) -> list[TaskStatus]:
    """Every task's merged state, asking the scheduler once about the unfinished ones."""
    job_ids = run.latest_job_ids()
    rows: list[TaskStatus] = []
    unfinished: dict[str, list[TaskStatus]] = {}  # a packed Slurm job runs several tasks: one id, several rows
    for task in run.tasks:
        attempt = run.attempt_of(task.index)
        state = _current_state(run, task.index, attempt) if attempt else run.read_state(task.index)
        row = _row(task.index, attempt, state, job_ids.get(task.index))
        row.inputs = task.inputs
        rows.append(row)
        if (state is None or state["state"] not in FINAL_TASK_STATES) and task.index in job_ids:
            unfinished.setdefault(job_ids[task.index], []).append(row)
    if unfinished:
        backend = backend or get_backend(run.backend)
        answers = backend.query(run, list(unfinished))
        for jid, row in ((j, r) for j, group in unfinished.items() for r in group):
            js = answers.get(jid)
            state = _current_state(run, row.index, row.attempt)
            if js is None or not js.active:  # the task may have finished while we asked
                fresh = _row(row.index, row.attempt, state, jid)
                row.state, row.exit_code, row.host, row.duration = fresh.state, fresh.exit_code, fresh.host, fresh.duration
                row.history, row.reason = fresh.history, fresh.reason
            _merge(row, state, js)
    return rows


def summarize(rows: Iterable[TaskStatus]) -> str:
    """One line such as '8 tasks: 6 completed, 1 failed, 1 running'."""
    rows = list(rows)
    counts = Counter(r.state for r in rows)
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in counts.items() if s not in STATE_ORDER]
    return f"{len(rows)} tasks: " + ", ".join(parts)


def run_state(rows: Sequence[TaskStatus]) -> str:
    """A one-word state for the whole run: completed, active, failed or incomplete."""
    states = {r.state for r in rows}
    if states <= {COMPLETED}:
        return "completed"
    if any(r.active for r in rows):
        return "active"
    if states & FAILED_LIKE:
        return "failed"
    return "incomplete"


def select_for_resubmit(rows: Sequence[TaskStatus], failed: bool, missing: bool) -> list[int]:
    """Indices to resubmit: failed-like and/or missing-like tasks; never completed or active ones."""
    wanted: set[str] = set()
    if failed:
        wanted |= FAILED_LIKE
    if missing:
        wanted |= MISSING_LIKE
    return [r.index for r in rows if r.state in wanted]


def resubmit_run(run: Run, failed: bool, missing: bool, backend: Backend | None = None, also: Iterable[int] = (),
                 only: Sequence[int] | None = None, rows: Sequence[TaskStatus] | None = None) -> tuple[list[int], dict[int, str]]:
    """Resubmit the selected tasks as one new array in the same run; return (indices, job ids).

    ``also``: more tasks to rerun, such as completed tasks whose outputs fail the kind's checks
    (``sbt_batch.batch.collect.invalid_outputs``). ``only``: exactly these tasks (if not active),
    whatever their state. ``rows``: the run's status when the caller already asked for it.
    """
    backend = backend or get_backend(run.backend)
    rows = run_status(run, backend) if rows is None else rows
    if only is not None:
        busy = [r.index for r in rows if r.index in set(only) and r.active]
        if busy:
            raise UserError(f"--tasks: task(s) {', '.join(map(str, busy[:10]))} are still queued or running")
        indices = sorted(only)
    else:
        indices = sorted(set(select_for_resubmit(rows, failed, missing)) | set(also))
    if not indices:
        return [], {}
    if run.resources.get("hold"):  # --hold applies to the first submission only
        run.resources["hold"] = False
    return indices, submit_run(run, backend, indices)


def cancel_run(run: Run, backend: Backend | None = None) -> list[int]:
    """Cancel every task that is still queued or running; return their indices."""
    backend = backend or get_backend(run.backend)
    rows = run_status(run, backend)
    active = [r for r in rows if r.active and r.job_id]
    if active:
        (run.path / "logs" / CANCEL_MARKER).write_text("cancelled by user\n")  # stopped tasks are not requeued
        backend.cancel(run, sorted({r.job_id for r in active if r.job_id}))
    return [r.index for r in active]


def list_runs(runs_dir: Path, query: bool = True) -> list[tuple[Run | None, list[TaskStatus] | None, str]]:
    """All runs under ``runs_dir`` with their task rows (None and an error text when the scheduler failed).

    A run whose manifest is damaged comes as ``(None, None, error)``.
    """
    out: list[tuple[Run | None, list[TaskStatus] | None, str]] = []
    for path in find_runs(runs_dir):
        try:
            run = Run.open(path)
        except UserError as exc:
            out.append((None, None, str(exc)))
            continue
        try:
            rows = run_status(run) if query else None
            out.append((run, rows, ""))
        except UserError as exc:
            out.append((run, None, str(exc)))
    return out


def wait_for_run(ref: str, interval: float = 5.0) -> None:
    """Block until every task of run ``ref`` completed; raise UserError (exit 1) as soon as one failed for good.

    What a DAGMan PRE script runs for ``--after`` on HTCondor: no scheduler access is needed on the schedd's machine.
    """
    import time

    run = Run.open(ref)
    while True:
        run = Run.open(run.path)
        states = []
        for task in run.tasks:
            attempt = run.attempt_of(task.index)
            state = run.read_state(task.index)
            current = state if state and state.get("attempt", 1) >= attempt else None
            states.append(current.get("state") if current else None)
        if all(s == "completed" for s in states):
            return
        bad = [i for i, s in enumerate(states) if s in ("failed", T_KILLED)]
        if bad:
            raise UserError(f"{run.path.name}: task(s) {', '.join(map(str, bad[:10]))} did not complete")
        time.sleep(interval)
