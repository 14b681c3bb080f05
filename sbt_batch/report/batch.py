"""Gather a batch run's report: attempts from the task files, timing, throughput, cost and failures."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbt_batch.batch.run import STATE, Run
from sbt_batch.common.errors import UserError
from sbt_batch.report.model import Attempt, BatchReport, FailureGroup

ACTIVE = {"pending", "held", "running"}
STRAGGLER_FACTOR = 2.0
_PATHY = re.compile(r"(/|\\|://|\.(root|h5|hdf5|json|yaml|keras|npz)$)")
_ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of a UTC ISO time such as ``2026-11-26T15:40:20Z`` (None when absent or malformed)."""
    if not text:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def task_states(run: Run, index: int) -> list[dict[str, Any]]:
    """Every recorded attempt's state.json of task ``index``, oldest first (archived ``attempt-<n>/`` ones included)."""
    found: dict[int, dict[str, Any]] = {}
    task_dir = run.task_dir(index)
    try:
        entries = list(task_dir.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        m = _ATTEMPT_DIR.match(entry.name)
        if m and (state := _read_json(entry / STATE)):
            found[int(state.get("attempt") or m.group(1))] = state
    current = _read_json(task_dir / STATE)
    if current:
        found[int(current.get("attempt") or 1)] = current
    return [found[k] for k in sorted(found)]


def _submission_times(run: Run, index: int) -> list[float | None]:
    """Submission time of attempt 1, 2, ... of task ``index`` (non-failed submissions that contain it)."""
    return [parse_time(s.get("time")) for s in run.submissions if s.get("status") != "failed" and index in s.get("indices", [])]


def _attempt(index: int, state: dict[str, Any], queued: float | None, outcome: str | None = None) -> Attempt:
    started = parse_time(state.get("started"))
    duration = state.get("duration")
    finished = started + float(duration) if started is not None and duration is not None else parse_time(state.get("finished"))
    return Attempt(index=index, attempt=int(state.get("attempt") or 1), outcome=outcome or str(state.get("state")), queued=queued,
                   started=started, finished=finished, duration=None if duration is None else float(duration),
                   exit_code=state.get("exit_code"), host=state.get("host"), tries=max(1, len(state.get("history") or [])))


def _rows(run: Run) -> tuple[dict[int, Any], str]:
    """The merged task rows of `status` (or none, with a note, when the scheduler cannot be asked)."""
    from sbt_batch.batch.core import run_status

    try:
        return {r.index: r for r in run_status(run)}, ""
    except UserError as exc:
        return {}, f"states from the task files only (the scheduler was not asked: {exc})"


def collect_attempts(run: Run, rows: dict[int, Any]) -> list[Attempt]:
    """All attempts of all tasks, the newest one with the state `status` merged (timeout, lost, queued...)."""
    out: list[Attempt] = []
    for task in run.tasks:
        subs = _submission_times(run, task.index)
        states = task_states(run, task.index)
        row = rows.get(task.index)
        for n, state in enumerate(states):
            number = int(state.get("attempt") or n + 1)
            queued = subs[number - 1] if 0 < number <= len(subs) else None
            newest = n == len(states) - 1 and (row is None or row.attempt <= number)
            merged = row.state if newest and row is not None and row.state not in ("pending", "held", "missing") else None
            out.append(_attempt(task.index, state, queued, merged))
        last = max((int(s.get("attempt") or 1) for s in states), default=0)
        if row is not None and row.state in ("pending", "held") and row.attempt > last:
            out.append(Attempt(index=task.index, attempt=row.attempt, outcome="queued", queued=subs[-1] if subs else None))
    return out


def cause_of(message: str) -> str:
    """The cause in an ``error: PATH: problem`` line: the problem, with leading path-like parts dropped."""
    text = message.strip()
    text = text[len("error:"):].strip() if text.startswith("error:") else text
    parts = text.split(": ")
    while len(parts) > 1 and _PATHY.search(parts[0]):
        parts.pop(0)
    return ": ".join(parts)


def _last_error_line(lines: Sequence[str]) -> str:
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else "")


def group_failures(run: Run, attempts: Sequence[Attempt], rows: dict[int, Any]) -> list[FailureGroup]:
    """Tasks whose newest attempt did not complete, grouped by cause, each with its last stderr line."""
    from sbt_batch.batch.collect import stderr_tail

    newest: dict[int, Attempt] = {}
    for a in attempts:
        newest[a.index] = a
    groups: dict[str, FailureGroup] = {}
    for index, a in sorted(newest.items()):
        if a.outcome in ("completed", "running", "queued"):
            continue
        tail = stderr_tail(run, index, lines=20)
        last = _last_error_line(tail)
        state = run.read_state(index) or {}
        row = rows.get(index)
        tried = [h.get("cause") for h in state.get("history") or [] if isinstance(h, dict) and h.get("cause")]
        recorded = re.sub(r"^(exit \d+|signal \d+): ", "", str(state.get("cause") or (tried[-1] if tried else "")))
        cause = cause_of(last) if last.startswith("error:") else (cause_of(recorded) if recorded else "")
        if not cause:
            reason = getattr(row, "reason", "") if row is not None else ""
            cause = reason or f"{a.outcome}" + (f" (exit {a.exit_code})" if a.exit_code not in (None, 0) else "")
        key = re.sub(r"\d+", "N", cause)
        groups.setdefault(key, FailureGroup(cause)).tasks.append((index, a.outcome, last or "(no stderr)"))
    return sorted(groups.values(), key=lambda g: -len(g.tasks))


def _part_events(path: str) -> int | None:
    """Events in a converted part (its gTowerEt length), or None when it is missing or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return int(h5["gTowerEt"].shape[0])
    except (OSError, KeyError, ValueError):
        return None


def settings_of(run: Run) -> dict[str, Any]:
    """What the run was submitted with: backend, site profile, image, resources and the rest."""
    m = run.manifest
    resources = {k: v for k, v in (m.get("resources") or {}).items() if v not in (None, "", [], {})}
    return {
        "backend": m.get("backend"), "site profile": m.get("site") or "(none)", "image": m.get("image") or "(none: host environment)",
        "binds": ", ".join(m.get("binds") or []) or "(none)", "resources": resources, "tool version": m.get("tool_version"),
        "created": m.get("created"), "submissions": len(run.submissions), "workdir": m.get("workdir"),
        "template": m.get("template") or "(default)",
    }


def batch_report(run: Run, figures: bool = True) -> BatchReport:
    """Everything the page and the terminal summary show about batch run ``run``."""
    from collections import Counter

    rows, note = _rows(run)
    attempts = collect_attempts(run, rows)
    newest: dict[int, Attempt] = {}
    for a in attempts:
        newest[a.index] = a
    counts = Counter(r.state for r in rows.values()) if rows else Counter(a.outcome for a in newest.values())
    done = [a for a in attempts if a.duration is not None and a.outcome not in ("running", "queued")]
    rep = BatchReport(path=str(run.path), name=run.path.name, kind=run.kind, backend=run.backend, settings=settings_of(run),
                      counts=dict(counts), n_tasks=len(run.tasks), attempts=attempts, finished=len(done), status_note=note)
    if done:
        _timing(run, rep, done)
    rep.failures = group_failures(run, attempts, rows)
    if figures and attempts:
        _figures(rep)
    if run.kind == "sweep":
        from sbt_batch.report.sweep import sweep_section

        rep.sweep = sweep_section(run)
    return rep


def _timing(run: Run, rep: BatchReport, done: list[Attempt]) -> None:
    """Durations, stragglers, events/s, CPU-hours and wall hours of the finished attempts."""
    rep.durations = [(a.index, float(a.duration)) for a in done]  # type: ignore[arg-type]
    rep.median = statistics.median(d for _, d in rep.durations)
    for index, seconds in rep.durations:
        if rep.median > 0 and seconds > STRAGGLER_FACTOR * rep.median:
            inputs = ", ".join(Path(i).name for i in run.tasks[index].inputs[:3]) + (" ..." if len(run.tasks[index].inputs) > 3 else "")
            rep.stragglers.append((index, seconds, inputs))
    cpus = int((run.resources or {}).get("cpus") or 1)
    rep.task_hours = sum(d for _, d in rep.durations) / 3600.0
    rep.cpu_hours = rep.task_hours * cpus
    starts = [a.started for a in done if a.started is not None]
    ends = [a.finished for a in done if a.finished is not None]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    rep.wall_hours = span / 3600.0
    if run.kind == "convert":
        for a in done:
            if a.outcome != "completed" or not run.tasks[a.index].outputs:
                continue
            n = _part_events(run.tasks[a.index].outputs[0])
            if n is not None:
                rep.rates.append((a.index, n, n / a.duration if a.duration else 0.0))
        rep.events = sum(n for _, n, _ in rep.rates)
        rep.overall_rate = rep.events / span if span > 0 and rep.events else None


def _figures(rep: BatchReport) -> None:
    from sbt_batch.report import figures as F

    times = [t for a in rep.attempts for t in (a.queued, a.started) if t is not None]
    t0 = min(times) if times else time.time()
    ends = [a.finished for a in rep.attempts if a.finished is not None]
    now = max([time.time()] if any(a.outcome in ("running", "queued") for a in rep.attempts) else ends or [t0])
    rep.figures["timeline"] = F.timeline(rep.attempts, t0, now)
    if rep.durations and rep.median is not None:
        rep.figures["durations"] = F.durations([d for _, d in rep.durations], rep.median)
    if rep.rates:
        rep.figures["throughput"] = F.throughput([i for i, _, _ in rep.rates], [r for _, _, r in rep.rates], rep.overall_rate)
