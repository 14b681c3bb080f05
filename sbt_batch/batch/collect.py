"""``collect``: check every task's outputs, merge them, and report failed or missing tasks.

Generic part: task states (``core.run_status``) and the last stderr lines of every task that did
not complete.  Kind-specific part: a *collector* per run kind, named as ``"module:function"`` in
:data:`COLLECTORS` and imported on first use, so that this module imports no stage package::

    COLLECTORS["train-tabular"] = "sbt_batch.tabular.collect:collect_tabular"

A collector gets the run, its task rows, the --allow-partial flag, --output and the problems found
so far; it checks and merges the outputs of completed tasks and returns a :class:`CollectResult`
(with what the CLI shows in ``display``).  A *validator* (:data:`VALIDATORS`, same naming) lists the
completed tasks whose outputs cannot be used: what ``resubmit --invalid`` reruns.  Kinds without one
get :func:`missing_outputs`.  Nothing here prints: the CLI shows a :class:`CollectReport`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbt_batch.batch.core import COMPLETED, TaskStatus, run_status
from sbt_batch.batch.run import Run
from sbt_batch.common.errors import EXIT_INCOMPLETE, InputFileError, UserError

STDERR_LINES = 5


@dataclass
class Problem:
    """A task whose output cannot be used: why, and the last lines of its stderr."""

    index: int
    state: str
    message: str
    stderr_tail: list[str] = field(default_factory=list)


@dataclass
class CollectResult:
    """What a collector produced: the merged output (if any), a summary, problems it found, and what to show."""

    output: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    display: list[Any] = field(default_factory=list)  # rich renderables or markup text, printed by the CLI in order


@dataclass
class CollectReport:
    """What ``collect`` found: the task rows, the problems to list, and the collector's result (None when it did not run)."""

    run: Run
    rows: list[TaskStatus]
    problems: list[Problem]
    result: CollectResult | None = None


class CollectIncomplete(UserError):
    """collect refused (exit 4) after checking the tasks; ``report`` holds what the CLI shows before the error line."""

    def __init__(self, message: str, report: CollectReport) -> None:
        super().__init__(message, exit_code=EXIT_INCOMPLETE)
        self.report = report


Collector = Callable[[Run, Sequence[TaskStatus], bool, "Path | None", list[Problem]], CollectResult]
Validator = Callable[[Run, Sequence[TaskStatus]], list[Problem]]
# run kind -> "module:function", imported on first use (batch/ imports no stage package itself)
COLLECTORS: dict[str, str] = {
    "convert": "sbt_batch.convert.collect:collect_convert",
    "train-tabular": "sbt_batch.tabular.collect:collect_tabular",
    "sweep": "sbt_batch.cnn.sweep:collect_sweep",
}
VALIDATORS: dict[str, str] = {"convert": "sbt_batch.convert.collect:invalid_parts"}


def resolve(target: str) -> Any:
    """Import ``"module:function"`` and return the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def get_collector(kind: str) -> Collector:
    """The collector for ``kind`` (a UserError when none is known)."""
    if kind not in COLLECTORS:
        raise UserError(f"collect: runs of kind '{kind}' have nothing to collect (known: {', '.join(sorted(COLLECTORS))})")
    collector: Collector = resolve(COLLECTORS[kind])
    return collector


def get_validator(kind: str) -> Validator:
    """The output check for ``kind``: its registered validator, else :func:`missing_outputs`."""
    if kind not in VALIDATORS:
        return missing_outputs
    validator: Validator = resolve(VALIDATORS[kind])
    return validator


def stderr_tail(run: Run, index: int, lines: int = STDERR_LINES) -> list[str]:
    """The last non-empty lines of the task's stderr (or of the scheduler log when the task never started)."""
    path = run.task_dir(index) / "stderr"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def task_problems(run: Run, rows: Sequence[TaskStatus]) -> list[Problem]:
    """A Problem for every task that did not complete."""
    out = []
    for r in rows:
        if r.state == COMPLETED:
            continue
        why = r.state + (f" (exit {r.exit_code})" if r.exit_code not in (None, 0) else "") + (f": {r.reason}" if r.reason else "")
        out.append(Problem(r.index, r.state, why, stderr_tail(run, r.index)))
    return out


def inputs_text(run: Run, index: int) -> str:
    """The first input names of task ``index`` (``a.root, b.root, c.root ...``), for a problem line."""
    inputs = run.tasks[index].inputs
    return ", ".join(Path(i).name for i in inputs[:3]) + (" ..." if len(inputs) > 3 else "")


def collect_run(run: Run, allow_partial: bool = False, output: Path | None = None) -> CollectReport:
    """Check and merge; raise CollectIncomplete (exit 4) when the run is incomplete and not --allow-partial."""
    rows = run_status(run)
    problems = task_problems(run, rows)
    active = [r for r in rows if r.active]
    if active and not allow_partial:
        raise UserError(f"{run.path.name}: {len(active)} of {len(rows)} tasks still queued or running; "
                        "wait (`sbt-batch status --watch`) and collect again", exit_code=EXIT_INCOMPLETE)
    if problems and not allow_partial:
        shown = ", ".join(str(p.index) for p in problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise CollectIncomplete(
            f"{run.path.name}: incomplete, {len(problems)} of {len(rows)} tasks not completed (tasks {shown}); "
            "`sbt-batch resubmit` reruns them, --allow-partial merges what is there",
            CollectReport(run, rows, problems),
        )
    result = get_collector(run.kind)(run, rows, allow_partial, output, problems)
    all_problems = problems + result.problems
    report = CollectReport(run, rows, all_problems, result)
    if all_problems and not allow_partial:
        raise CollectIncomplete(f"{run.path.name}: {len(result.problems)} task output(s) failed the checks "
                                f"(tasks {', '.join(str(p.index) for p in result.problems[:10])}); "
                                "`sbt-batch resubmit --invalid` reruns them", report)
    if all_problems:
        raise CollectIncomplete(f"{run.path.name}: partial: {len(all_problems)} task(s) left out; the merged output is incomplete", report)
    return report


def missing_outputs(run: Run, rows: Sequence[TaskStatus]) -> list[Problem]:
    """Completed tasks with an output path that does not exist (the check of kinds without a validator)."""
    bad = []
    for r in rows:
        if r.state != COMPLETED:
            continue
        try:
            for out in run.tasks[r.index].outputs:
                if not Path(out).exists():
                    raise InputFileError(Path(out), "output missing although the task completed")
        except UserError as exc:
            bad.append(Problem(r.index, "bad output", str(exc)))
    return bad


def invalid_outputs(run: Run, rows: Sequence[TaskStatus]) -> list[Problem]:
    """Completed tasks whose outputs cannot be used (deleted, truncated, wrong event count): what `resubmit --invalid` reruns."""
    return get_validator(run.kind)(run, rows)
