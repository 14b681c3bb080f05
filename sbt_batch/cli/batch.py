"""CLI commands: submit (convert/train/evaluate/train-tabular), status, collect, resubmit, cancel, runs, task run."""

from __future__ import annotations

from pathlib import Path
import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from sbt_batch.cli.app import app
from sbt_batch.errors import UserError

submit_app = typer.Typer(
    help="Submit a batch run (convert, train, evaluate, train-tabular) to the local machine, Slurm or HTCondor.",
    no_args_is_help=True,
)
task_app = typer.Typer(help="Commands that batch jobs run (not for direct use).", no_args_is_help=True)
app.add_typer(submit_app, name="submit", rich_help_panel="Batch")
app.add_typer(task_app, name="task", hidden=True)

PASS = {"allow_extra_args": True, "ignore_unknown_options": True}

# Options shared by every submit command: (parameter, type, typer option).
O_RUNS_DIR = typer.Option(None, "--runs-dir", help="Where run directories go (default $SBT_BATCH_RUNS or ./runs).")
SUBMIT_OPTIONS: list[tuple[str, Any, Any]] = [
    ("backend", Optional[str], typer.Option(None, "--backend", "-b", help="local (default), slurm or condor.")),
    ("site", Optional[str], typer.Option(None, "--site", help="Site profile: a YAML path or a name in ~/.config/sbt-batch/.")),
    ("name", Optional[str], typer.Option(None, "--name", help="Run name (default: the command); the run directory is NAME-<UTC time>.")),
    ("runs_dir", Optional[Path], O_RUNS_DIR),
    ("image", Optional[str], typer.Option(None, "--image", help="Run each task inside this container image.")),
    ("bind", Optional[list[str]], typer.Option(None, "--bind", help="Path bound into the container (repeatable).")),
    ("partition", Optional[str], typer.Option(None, "--partition", help="Slurm partition.")),
    ("account", Optional[str], typer.Option(None, "--account", help="Slurm account.")),
    ("time", Optional[str], typer.Option(None, "--time", help="Wall time per task: MINUTES, HH:MM:SS or D-HH:MM:SS.")),
    ("mem", Optional[str], typer.Option(None, "--mem", help="Memory per task, e.g. 4G.")),
    ("cpus", Optional[int], typer.Option(None, "--cpus", help="CPUs per task.")),
    ("gpus", Optional[int], typer.Option(None, "--gpus", help="GPUs per task.")),
    ("max_running", Optional[int], typer.Option(None, "--max-running", help="At most N tasks at once (Slurm %N throttle, local pool size).")),
    ("template", Optional[Path], typer.Option(None, "--template", help="Your own copy of the backend's job template.")),
    ("directive", Optional[list[str]], typer.Option(None, "--directive", help="Extra scheduler directive, e.g. --directive=--qos=short (repeatable).")),
    ("after", Optional[str], typer.Option(None, "--after", help="Start only after this run completed successfully.")),
    ("hold", bool, typer.Option(False, "--hold", help="Submit held (Slurm: release with scontrol release).", hidden=True)),
    ("dry_run", bool, typer.Option(False, "--dry-run", help="Print the job script and the task table; submit nothing.")),
]
SHARED: dict[str, Any] = {}  # placeholder default of the ``opts`` parameter that :func:`submit_options` replaces


def submit_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a submit command the shared options; the command receives them as one ``opts`` dict."""
    own = [p for p in inspect.signature(func).parameters.values() if p.name != "opts"]
    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in SUBMIT_OPTIONS]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        opts = {n: kwargs.pop(n) for n, _, _ in SUBMIT_OPTIONS}
        func(**kwargs, opts=opts)

    command.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    command.__annotations__ = {**{k: v for k, v in func.__annotations__.items() if k != "opts"}, **{n: t for n, t, _ in SUBMIT_OPTIONS}}
    return command


def _do_submit(kind: str, tasks_fn, opts: dict[str, Any], options: dict[str, Any] | None = None) -> None:
    import dataclasses

    from sbt_batch.batch.submit import SubmitOptions, submit_new_run

    fields = {f.name for f in dataclasses.fields(SubmitOptions)}
    submit_new_run(kind, tasks_fn, SubmitOptions(**{k: v for k, v in opts.items() if k in fields}), options or {})


@submit_app.command("convert")
@submit_options
def submit_convert(
    inputs: list[str] = typer.Argument(..., help="Input ntuples (files, directories, globs or @list files)."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Where parts/ and the merged HDF5 go."),
    files_per_job: int = typer.Option(1, "--files-per-job", "-k", help="Input files per task."),
    convert_args: str = typer.Option("", "--convert-args", help="Extra `sbt-batch convert` options for every task, e.g. '--eta-max 2.7'."),
    opts: dict[str, Any] = SHARED,
) -> None:
    """Convert ntuples to HDF5 as a batch run: one task per --files-per-job inputs."""
    from sbt_batch.batch.kinds import convert_tasks
    from sbt_batch.batch.submit import resolve_inputs

    import shlex

    out = output_dir.absolute()
    files = resolve_inputs(inputs)
    try:
        extra = shlex.split(convert_args)
    except ValueError as exc:
        raise UserError(f"--convert-args: {exc}") from None
    _do_submit("convert", lambda settings: convert_tasks(files, files_per_job, out, extra, settings["resources"]["cpus"]), opts, {"output_dir": str(out), "merged": str(out / "merged.h5"), "make_dirs": [str(out / "parts")]})


def _single(kind: str, ctx: typer.Context, opts: dict[str, Any]) -> None:
    from sbt_batch.batch.kinds import single_task

    argv = list(ctx.args)
    _do_submit(kind, lambda _settings: single_task(kind, argv), opts)


@submit_app.command("train", context_settings=PASS)
@submit_options
def submit_train(
    ctx: typer.Context,
    opts: dict[str, Any] = SHARED,
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Horovod: nodes for one multi-rank training."),
    ntasks: Optional[int] = typer.Option(None, "--ntasks", help="Horovod: ranks in total."),
    ntasks_per_node: Optional[int] = typer.Option(None, "--ntasks-per-node", help="Horovod: ranks per node."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="Horovod: GPUs per node (default: one rank each)."),
    mpi_launcher: str = typer.Option("srun", "--mpi-launcher", help="Slurm ranks: srun (--mpi=pmix) | mpirun."),
) -> None:
    """Submit one `sbt-batch train ...` task (N Horovod ranks with --ntasks/--nodes); training options after `--`."""
    from sbt_batch.batch.kinds import single_task
    from sbt_batch.launch import train_submit_settings

    ranks = {"nodes": nodes, "ntasks": ntasks, "ntasks_per_node": ntasks_per_node, "gpus_per_node": gpus_per_node, "mpi_launcher": mpi_launcher}
    opts, argv = train_submit_settings({**opts, **ranks}, list(ctx.args))
    _do_submit("train", lambda _settings: single_task("train", argv), opts)


@submit_app.command("evaluate", context_settings=PASS)
@submit_options
def submit_evaluate(
    ctx: typer.Context,
    opts: dict[str, Any] = SHARED,
) -> None:
    """Submit one `sbt-batch evaluate ...` task; put the evaluation options after `--`."""
    _single("evaluate", ctx, opts)


@submit_app.command("train-tabular", context_settings=PASS)
@submit_options
def submit_train_tabular(
    ctx: typer.Context,
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Training output; repeat i goes to DIR/repeat-i."),
    repeats: int = typer.Option(1, "--repeats", help="Independent trainings, one task each."),
    opts: dict[str, Any] = SHARED,
) -> None:
    """Submit --repeats `sbt-batch train-tabular ... --repeat-index i` tasks; options after `--`."""
    from sbt_batch.batch.kinds import repeat_tasks

    argv = list(ctx.args)
    out = output_dir.absolute()
    _do_submit("train-tabular", lambda _settings: repeat_tasks("train-tabular", argv, repeats, out), opts, {"output_dir": str(out), "repeats": repeats, "make_dirs": [str(out)]})


@app.command("status", rich_help_panel="Batch")
def status(
    run: str = typer.Argument(..., help="Run directory, or a run name (newest run of that name)."),
    runs_dir: Optional[Path] = O_RUNS_DIR,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until no task is queued or running."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = typer.Option(False, "--json", help="Print the task rows as JSON."),
) -> None:
    """Show each task's state, exit code, host and duration (one scheduler query per run)."""
    from sbt_batch.batch.show import show_status

    show_status(run, runs_dir, watch=watch, interval=interval, as_json=as_json)


@app.command("collect", rich_help_panel="Batch")
def collect(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Optional[Path] = O_RUNS_DIR,
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Merge what is there even if tasks failed."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Merged output (convert: default OUTPUT_DIR/merged.h5)."),
) -> None:
    """Check every task's outputs, merge them, and list failed or missing tasks (exit 4 when incomplete)."""
    from sbt_batch.batch.collect import collect_run
    from sbt_batch.batch.run import Run

    collect_run(Run.open(run, runs_dir), allow_partial=allow_partial, output=output)


@app.command("resubmit", rich_help_panel="Batch")
def resubmit(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Optional[Path] = O_RUNS_DIR,
    failed: bool = typer.Option(False, "--failed", help="Tasks that failed, were cancelled, timed out or were lost."),
    missing: bool = typer.Option(False, "--missing", help="Tasks that never ran or were never submitted."),
    unfinished: bool = typer.Option(False, "--unfinished", help="Both (the default)."),
    time: Optional[str] = typer.Option(None, "--time", help="New wall time for the resubmitted tasks."),
    mem: Optional[str] = typer.Option(None, "--mem", help="New memory for the resubmitted tasks."),
) -> None:
    """Submit only the failed and/or missing tasks again, as one new array in the same run."""
    from sbt_batch.batch.submit import resubmit_cli

    if unfinished or not (failed or missing):
        failed = missing = True
    resubmit_cli(run, runs_dir, failed=failed, missing=missing, time=time, mem=mem)


@app.command("cancel", rich_help_panel="Batch")
def cancel(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Optional[Path] = O_RUNS_DIR,
) -> None:
    """Cancel the run's queued and running tasks."""
    from sbt_batch.batch.core import cancel_run
    from sbt_batch.batch.run import Run
    from sbt_batch.console import console

    the_run = Run.open(run, runs_dir)
    cancelled = cancel_run(the_run)
    console.print(f"cancelled {len(cancelled)} task(s) of {the_run.path.name}" if cancelled else "nothing to cancel")


@app.command("runs", rich_help_panel="Batch")
def runs(runs_dir: Optional[Path] = O_RUNS_DIR) -> None:
    """List the runs with a one-line state each."""
    from sbt_batch.batch.show import show_runs

    show_runs(runs_dir)


@task_app.command("run")
def task_run(run_dir: Path = typer.Argument(...), index: int = typer.Argument(...)) -> None:
    """Run task INDEX of RUN_DIR and record tasks/INDEX/state.json (what every batch job executes)."""
    from sbt_batch.batch.task import run_task

    code = run_task(run_dir, index)
    raise typer.Exit(code)


@task_app.command("probe", context_settings=PASS)
def task_probe(
    ctx: typer.Context,
    sleep: float = typer.Option(0.0, "--sleep", help="Seconds to sleep before exiting."),
    exit_code: int = typer.Option(0, "--exit", help="Exit code to return."),
    done_if: Optional[Path] = typer.Option(None, "--done-if", help="Exit 0 at once when this file exists."),
) -> None:
    """Print the arguments, host and directory as JSON, then sleep and exit (to test a batch system)."""
    import json
    import os
    import socket
    import time as _time

    print(json.dumps({"args": list(ctx.args), "host": socket.gethostname(), "cwd": os.getcwd()}), flush=True)
    if done_if is not None and done_if.exists():
        raise typer.Exit(0)
    deadline = _time.monotonic() + sleep
    while _time.monotonic() < deadline:
        if done_if is not None and done_if.exists():
            raise typer.Exit(0)
        _time.sleep(min(0.5, max(0.0, deadline - _time.monotonic())))
    raise typer.Exit(exit_code)


@task_app.command("condor-node")
def task_condor_node(run_dir: Path = typer.Argument(...), index: int = typer.Argument(...)) -> None:
    """One node of an HTCondor parallel-universe job: start this node's Horovod ranks of task INDEX."""
    from sbt_batch.batch.condor_parallel import run_node

    raise typer.Exit(run_node(run_dir, index))


@task_app.command("rank-probe")
def task_rank_probe(
    out_dir: Path = typer.Argument(...),
    fail_rank: Optional[int] = typer.Option(None, "--fail-rank", help="This rank exits with --exit."),
    exit_code: int = typer.Option(0, "--exit", help="Exit code of --fail-rank."),
    sleep: float = typer.Option(0.0, "--sleep", help="Seconds to sleep before exiting."),
) -> None:
    """Write this Horovod rank's environment after a rendezvous round trip (to test a multi-node launch)."""
    from sbt_batch.batch.condor_parallel import rank_probe

    raise typer.Exit(rank_probe(out_dir, fail_rank, exit_code, sleep))
