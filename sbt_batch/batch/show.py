"""What `status` and `runs` show: plain aligned tables (fast for thousands of tasks), JSON for scripts; the CLI prints them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from sbt_batch.batch.core import TaskStatus, list_runs, run_state, summarize
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


def status_warnings(rows: list[TaskStatus]) -> list[str]:
    """One ``warning:`` line for every task whose state.json is corrupt or unreadable (for stderr)."""
    return [f"warning: task {r.index}: {r.reason}" for r in rows
            if "state.json" in r.reason and ("corrupt" in r.reason or "unreadable" in r.reason)]


def format_status_json(run: Run, rows: list[TaskStatus]) -> str:
    """``status --json``: the run, its one-word state and every task row."""
    return json.dumps({"run": str(run.path), "state": run_state(rows), "tasks": [asdict(r) for r in rows]}, indent=1) + "\n"


def task_lines(run: Run) -> list[str]:
    """The task list of a (dry-run) run, one copy-pasteable command line per task."""
    import shlex

    return [f"{t.index:>5}  sbt-batch {shlex.join(t.argv)}" for t in run.tasks]


def format_runs(runs_dir: Path | None) -> tuple[str, list[str]]:
    """``runs``: one line per run (name, kind, backend, created, state and counts), and a warning per damaged run."""
    runs_dir = Path(runs_dir or default_runs_dir())
    found = list_runs(runs_dir)
    if not found:
        return f"no runs in {runs_dir}\n", []
    warnings = []
    table = [["run", "kind", "backend", "created", "state", "tasks"]]
    for run, rows, error in found:
        if run is None:  # a damaged manifest: warn in one line, list the good runs
            warnings.append(f"warning: {' '.join(error.split())}")
            continue
        if rows is None:
            table.append([run.path.name, run.kind, run.backend, run.manifest.get("created", ""), "unknown", error])
        else:
            table.append([run.path.name, run.kind, run.backend, run.manifest.get("created", ""), run_state(rows), summarize(rows)])
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]) - 1)]
    text = "".join("  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip() + "\n" for row in table)
    return text, warnings
