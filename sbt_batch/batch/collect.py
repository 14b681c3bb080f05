"""``collect``: check every task's outputs, merge them, and report failed or missing tasks.

Generic part: task states (``core.run_status``) and the last stderr lines of every task that did
not complete.  Kind-specific part: a *collector* registered per run kind::

    from sbt_batch.batch.collect import register_collector

    @register_collector("train-tabular")
    def collect_tabular(run, rows, allow_partial, output) -> CollectResult: ...

A collector gets the run, its task rows, the --allow-partial flag and --output, checks and merges
the outputs of completed tasks, and returns what it found.  ``convert`` is built in; other kinds
are looked up lazily in :data:`LAZY_COLLECTORS` so that their modules load only when needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbt_batch.batch.core import COMPLETED, TaskStatus, run_status, summarize
from sbt_batch.batch.run import Run
from sbt_batch.common.errors import EXIT_INCOMPLETE, InputFileError, UserError, one_line

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
    """What a collector produced: the merged output (if any), a summary and problems it found."""

    output: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


Collector = Callable[[Run, Sequence[TaskStatus], bool, "Path | None", list[Problem]], CollectResult]
COLLECTORS: dict[str, Collector] = {}
# kind -> "module:function" imported on first use (the module registers nothing itself)
LAZY_COLLECTORS: dict[str, str] = {"train-tabular": "sbt_batch.batch.collect:collect_tabular",
                                   "sweep": "sbt_batch.cnn.sweep:collect_sweep"}


def register_collector(kind: str):
    """Decorator: use this function to collect runs of ``kind``."""

    def decorate(fn: Collector) -> Collector:
        COLLECTORS[kind] = fn
        return fn

    return decorate


def get_collector(kind: str) -> Collector:
    """The collector for ``kind`` (a UserError when none is known)."""
    if kind not in COLLECTORS and kind in LAZY_COLLECTORS:
        module, _, name = LAZY_COLLECTORS[kind].partition(":")
        COLLECTORS[kind] = getattr(importlib.import_module(module), name)
    if kind not in COLLECTORS:
        raise UserError(f"collect: runs of kind '{kind}' have nothing to collect (known: {', '.join(sorted(set(COLLECTORS) | set(LAZY_COLLECTORS)))})")
    return COLLECTORS[kind]


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


def report_problems(run: Run, problems: Sequence[Problem]) -> None:
    """Print the failed/missing tasks with their last stderr lines (stderr, for people)."""
    from rich.markup import escape

    from sbt_batch.common.console import err_console

    for p in problems:
        task = run.tasks[p.index]
        what = ", ".join(Path(i).name for i in task.inputs[:3]) + (" ..." if len(task.inputs) > 3 else "")
        err_console.print(f"[red]task {p.index}[/] {escape(p.message)}" + (f"  [dim]({escape(what)})[/]" if what else ""))
        for line in p.stderr_tail:
            err_console.print(f"    {escape(line)}", highlight=False)


def collect_run(run: Run, allow_partial: bool = False, output: Path | None = None) -> CollectResult:
    """Check, merge and report; raise UserError(exit 4) when the run is incomplete and not --allow-partial."""
    from sbt_batch.common.console import console

    rows = run_status(run)
    problems = task_problems(run, rows)
    active = [r for r in rows if r.active]
    if active and not allow_partial:
        raise UserError(f"{run.path.name}: {len(active)} of {len(rows)} tasks still queued or running; "
                        "wait (`sbt-batch status --watch`) and collect again", exit_code=EXIT_INCOMPLETE)
    if problems and not allow_partial:
        report_problems(run, problems)
        shown = ", ".join(str(p.index) for p in problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise UserError(
            f"{run.path.name}: incomplete, {len(problems)} of {len(rows)} tasks not completed (tasks {shown}); "
            "`sbt-batch resubmit` reruns them, --allow-partial merges what is there",
            exit_code=EXIT_INCOMPLETE,
        )
    result = get_collector(run.kind)(run, rows, allow_partial, output, problems)
    all_problems = problems + result.problems
    if all_problems:
        report_problems(run, all_problems)
    if result.output:
        console.print(f"merged {result.summary.get('events', '?')} events from {result.summary.get('parts', '?')} part(s) into {result.output}")
    console.print(summarize(rows))
    if all_problems and not allow_partial:
        raise UserError(f"{run.path.name}: {len(result.problems)} task output(s) failed the checks "
                        f"(tasks {', '.join(str(p.index) for p in result.problems[:10])}); `sbt-batch resubmit --invalid` reruns them",
                        exit_code=EXIT_INCOMPLETE)
    if all_problems:
        raise UserError(f"{run.path.name}: partial: {len(all_problems)} task(s) left out; the merged output is incomplete", exit_code=EXIT_INCOMPLETE)
    return result


def check_convert_part(task, shape: tuple | None) -> tuple[int, tuple]:
    """Check one convert part (exists, opens, events == input entries, 2-D images); return (events, image shape)."""
    import h5py

    from sbt_batch.convert.names import ET_DATASET
    from sbt_batch.convert.source import read_entries

    part = Path(task.outputs[0])
    if not part.is_file():
        raise InputFileError(part, "output missing although the task completed")
    try:
        with h5py.File(part, "r") as h5:
            n = int(h5[ET_DATASET].shape[0])
            part_shape = tuple(h5[ET_DATASET].shape[1:])
    except (OSError, KeyError) as exc:
        raise InputFileError(part, f"does not open as a converted HDF5 file ({one_line(exc, 200)})") from None
    entries = sum(read_entries(i) for i in task.inputs)
    if n != entries:
        raise InputFileError(part, f"has {n} events but its inputs have {entries} entries")
    if len(part_shape) != 2 or (shape is not None and part_shape != shape):
        raise InputFileError(part, f"image shape {part_shape} differs from {shape}")
    return n, part_shape


def invalid_outputs(run: Run, rows: Sequence[TaskStatus]) -> list[Problem]:
    """Completed tasks whose outputs cannot be used (deleted, truncated, wrong event count): what `resubmit --invalid` reruns."""
    bad = []
    shape = None
    for r in rows:
        if r.state != COMPLETED:
            continue
        task = run.tasks[r.index]
        try:
            if run.kind == "convert" and task.outputs:
                _n, shape = check_convert_part(task, shape)
            else:
                for out in task.outputs:
                    if not Path(out).exists():
                        raise InputFileError(Path(out), "output missing although the task completed")
        except UserError as exc:
            bad.append(Problem(r.index, "bad output", str(exc)))
    return bad


@register_collector("convert")
def collect_convert(run: Run, rows: Sequence[TaskStatus], allow_partial: bool, output: Path | None, problems: list[Problem]) -> CollectResult:
    """Check each part (exists, opens, events == input entries, image shape) and merge them in input order."""
    from sbt_batch.convert.merge import merge_outputs

    good: list[Path] = []
    expected = 0
    shape = None
    bad: list[Problem] = []
    for r in rows:
        if r.state != COMPLETED:
            continue
        task = run.tasks[r.index]
        try:
            entries, shape = check_convert_part(task, shape)
        except UserError as exc:
            bad.append(Problem(r.index, "bad output", str(exc)))
            continue
        good.append(Path(task.outputs[0]))
        expected += entries
    if bad and not allow_partial:
        return CollectResult(None, {}, bad)
    if not good:
        raise UserError(f"{run.path.name}: no completed task output to merge", exit_code=EXIT_INCOMPLETE)
    out = Path(output or run.manifest.get("options", {}).get("merged") or run.path / "merged.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = merge_outputs(good, out, expected_events=expected)
    return CollectResult(out, {"events": merged.events, "parts": len(good)}, bad)


def collect_tabular(run: Run, rows: Sequence[TaskStatus], allow_partial: bool, output: Path | None, problems: list[Problem]) -> CollectResult:
    """train-tabular: summarise the repeats with sbt_batch.tabular's ``collect_repeats``."""
    from sbt_batch.tabular.repeats import collect_repeats, print_summary

    opts = run.manifest.get("options", {})
    summary = collect_repeats(opts["output_dir"], expected=opts.get("repeats"), allow_missing=allow_partial)
    print_summary(summary)
    return CollectResult(None, summary, [])
