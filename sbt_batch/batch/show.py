"""What `status` and `runs` print: plain aligned tables (fast for thousands of tasks), JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sbt_batch.batch.core import TaskStatus, list_runs, run_state, run_status, summarize
from sbt_batch.batch.run import Run, default_runs_dir

STYLE = {"completed": "green", "running": "cyan", "pending": "blue", "held": "blue", "failed": "red", "timeout": "red",
         "cancelled": "yellow", "killed": "red", "lost": "magenta", "missing": "magenta", "unsubmitted": "magenta"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


ANSI = {"green": "32", "cyan": "36", "blue": "34", "red": "31", "yellow": "33", "magenta": "35"}
COLUMNS = ("task", "state", "attempt", "exit", "host", "duration", "job id", "reason")
RIGHT = {"task", "attempt", "exit", "duration"}


def _cells(r: TaskStatus) -> list[str]:
    return [str(r.index), r.state, str(r.attempt or ""), "" if r.exit_code is None else str(r.exit_code), r.host or "",
            _duration(r.duration), r.job_id or "", r.reason]


def format_status(run: Run, rows: list[TaskStatus], color: bool = False) -> str:
    """The status table as plain text (fast for thousands of tasks; ANSI colours for a terminal)."""
    table = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(COLUMNS))]
    lines = [f"{run.path.name} ({run.kind}, {run.backend})"]
    for n, row in enumerate(table):
        cells = []
        for c, (col, text) in enumerate(zip(COLUMNS, row)):
            padded = text.rjust(widths[c]) if col in RIGHT else text.ljust(widths[c])
            if color and n and col == "state" and STYLE.get(text) in ANSI:
                padded = f"\033[{ANSI[STYLE[text]]}m{padded}\033[0m"
            elif color and n == 0:
                padded = f"\033[1m{padded}\033[0m"
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    lines.append(summarize(rows))
    return "\n".join(lines) + "\n"


def show_status(ref: str, runs_dir: Path | None, watch: bool = False, interval: float = 2.0, as_json: bool = False) -> None:
    """Print the status table once, or refresh it until nothing is queued or running."""
    run = Run.open(ref, runs_dir)
    rows = run_status(run)
    for r in rows:
        if "state.json" in r.reason and ("corrupt" in r.reason or "unreadable" in r.reason):
            sys.stderr.write(f"warning: task {r.index}: {r.reason}\n")
    if as_json:
        sys.stdout.write(json.dumps({"run": str(run.path), "state": run_state(rows), "tasks": [asdict(r) for r in rows]}, indent=1) + "\n")
        return
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(format_status(run, rows, color))
    while watch and any(r.active for r in rows):
        time.sleep(interval)
        rows = run_status(Run.open(run.path))
        text = format_status(run, rows, color)
        sys.stdout.write(("\033[H\033[J" if color else "\n") + text)
        sys.stdout.flush()


def print_task_table(run: Run) -> None:
    """The task list of a (dry-run) run, one copy-pasteable command line per task."""
    import shlex

    from sbt_batch.common.console import console

    console.print(f"[bold]{len(run.tasks)} task(s):[/]")
    for t in run.tasks:
        console.print(f"{t.index:>5}  sbt-batch {shlex.join(t.argv)}", markup=False, highlight=False, soft_wrap=True)


def show_runs(runs_dir: Path | None) -> None:
    """One line per run: name, kind, backend, created, state and counts."""
    runs_dir = Path(runs_dir or default_runs_dir())
    found = list_runs(runs_dir)
    if not found:
        sys.stdout.write(f"no runs in {runs_dir}\n")
        return
    table = [["run", "kind", "backend", "created", "state", "tasks"]]
    for run, rows, error in found:
        if run is None:  # a damaged manifest: warn in one line, list the good runs
            sys.stderr.write(f"warning: {' '.join(error.split())}\n")
            continue
        if rows is None:
            table.append([run.path.name, run.kind, run.backend, run.manifest.get("created", ""), "unknown", error])
        else:
            table.append([run.path.name, run.kind, run.backend, run.manifest.get("created", ""), run_state(rows), summarize(rows)])
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]) - 1)]
    for row in table:
        sys.stdout.write("  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip() + "\n")
