"""CLI commands: sweep (submit a grid of train options x seeds as one job array), sweep-report, sweep-point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sbt_batch.cli.app import app
from sbt_batch.cli.batch import SHARED, print_submitted, submit_options


@app.command("sweep", rich_help_panel="Train")
@submit_options
def sweep_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Sweep YAML (jobs/sweep-gfex.yaml): train options, grid/points, seeds."),
    opts: dict[str, Any] = SHARED,
) -> None:
    """Train every point x seed of a sweep as one batch job array (again: only the unfinished ones)."""
    import dataclasses

    from sbt_batch.batch.submit import DryRun, SubmitOptions, submit_new_run
    from sbt_batch.cli.batch import check_task_argv
    from sbt_batch.cnn.sweep import check_not_running, load_sweep, record_run, sweep_tasks, write_sweep
    from sbt_batch.common.console import console

    sweep = load_sweep(config)  # every bad key or point fails here, before anything is written
    check_not_running(sweep.out)
    tasks = sweep_tasks(sweep)
    total = len(sweep.points) * len(sweep.seeds)
    if not tasks:
        write_sweep(sweep)
        console.print(f"all {total} point x seed(s) of {sweep.out} are done; `sbt-batch sweep-report {sweep.out}` writes the report")
        return
    fields = {f.name for f in dataclasses.fields(SubmitOptions)}
    sub = SubmitOptions(**{k: v for k, v in opts.items() if k in fields})
    sub.name = sub.name or "sweep"
    if not sub.dry_run:
        write_sweep(sweep)
    run = submit_new_run("sweep", lambda _settings: tasks, sub, {"sweep_dir": str(sweep.out), "config": str(config.absolute())},
                         check_task=check_task_argv)
    print_submitted(run)
    if not isinstance(run, DryRun):
        record_run(sweep.out, run.path)
        console.print(f"{len(tasks)} of {total} point x seed(s) submitted; then `sbt-batch collect {run.path}` "
                      f"(or `sbt-batch sweep-report {sweep.out}`)")


@app.command("sweep-report", rich_help_panel="Train")
def sweep_report_cmd(
    run: Path = typer.Argument(..., help="Sweep directory (the config's out:) or its batch run directory."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Report folder [SWEEP_DIR/report]."),
    allow_partial: bool = typer.Option(True, "--allow-partial/--complete", help="Report the finished points when some are missing."),
) -> None:
    """Comparison table (mean ± std over seeds, seed ensembles), baseline-error bars, best ROC curves, best.yaml."""
    from sbt_batch.cnn.sweep import summary_renderables, sweep_report
    from sbt_batch.common.console import console

    result = sweep_report(run, output, allow_missing=allow_partial)
    for item in summary_renderables(result):
        console.print(item)
    console.print(f"wrote {result['output']}/sweep.md, sweep.csv, sweep.json, baseline_error.png, roc_best.png, best.yaml")


@app.command("sweep-point", hidden=True)
def sweep_point_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The point x seed's train.yaml written by `sbt-batch sweep`."),
) -> None:
    """One sweep task: train (resume after a checkpoint; skip when trained), then evaluate."""
    from sbt_batch.cnn.sweep import run_point
    from sbt_batch.common.console import console

    console.print(f"wrote {run_point(config)}/eval/metrics.json")
