"""What `status` and `runs` print: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
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


def status_table(run: Run, rows: list[TaskStatus]):
    """A rich Table of the task rows."""
    from rich.table import Table

    table = Table(title=f"{run.path.name} ({run.kind}, {run.backend})", caption=summarize(rows), show_lines=False)
    for col in ("task", "state", "attempt", "exit", "host", "duration", "job id", "reason"):
        table.add_column(col, justify="right" if col in {"task", "attempt", "exit", "duration"} else "left")
    for r in rows:
        style = STYLE.get(r.state, "")
        table.add_row(str(r.index), f"[{style}]{r.state}[/]" if style else r.state, str(r.attempt or ""),
                      "" if r.exit_code is None else str(r.exit_code), r.host or "", _duration(r.duration), r.job_id or "", r.reason)
    return table


def show_status(ref: str, runs_dir: Path | None, watch: bool = False, interval: float = 2.0, as_json: bool = False) -> None:
    """Print the status table once, or refresh it until nothing is queued or running."""
    from sbt_batch.console import console

    run = Run.open(ref, runs_dir)
    rows = run_status(run)
    if as_json:
        console.print_json(json.dumps({"run": str(run.path), "state": run_state(rows), "tasks": [asdict(r) for r in rows]}))
        return
    if not watch:
        console.print(status_table(run, rows))
        return
    from rich.live import Live

    with Live(status_table(run, rows), console=console, refresh_per_second=4) as live:
        while any(r.active for r in rows):
            time.sleep(interval)
            rows = run_status(run)
            live.update(status_table(run, rows))


def print_task_table(run: Run) -> None:
    """The task list of a (dry-run) run, one copy-pasteable command line per task."""
    import shlex

    from sbt_batch.console import console

    console.print(f"[bold]{len(run.tasks)} task(s):[/]")
    for t in run.tasks:
        console.print(f"{t.index:>5}  sbt-batch {shlex.join(t.argv)}", markup=False, highlight=False, soft_wrap=True)


def show_runs(runs_dir: Path | None) -> None:
    """One line per run: name, kind, backend, created, state and counts."""
    from rich.table import Table

    from sbt_batch.console import console

    runs_dir = Path(runs_dir or default_runs_dir())
    found = list_runs(runs_dir)
    if not found:
        console.print(f"no runs in {runs_dir}")
        return
    table = Table()
    for col in ("run", "kind", "backend", "created", "state", "tasks"):
        table.add_column(col)
    for run, rows, error in found:
        if run is None:
            table.add_row("?", "", "", "", "[red]unreadable[/]", error)
        elif rows is None:
            table.add_row(run.path.name, run.kind, run.backend, run.manifest.get("created", ""), "[red]unknown[/]", error)
        else:
            state = run_state(rows)
            table.add_row(run.path.name, run.kind, run.backend, run.manifest.get("created", ""), f"[{STYLE.get(state, '')}]{state}[/]"
                          if state in STYLE else state, summarize(rows))
    console.print(table)
