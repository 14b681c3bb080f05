"""CLI commands: submit (convert/train/evaluate/train-tabular), status, collect, resubmit, cancel, runs, task run."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from sbt_batch.cli.app import app
from sbt_batch.common.errors import UserError

if TYPE_CHECKING:  # the batch modules load inside the commands, so that `sbt-batch --help` stays fast
    from sbt_batch.batch.collect import CollectReport
    from sbt_batch.batch.run import Run, Task
    from sbt_batch.batch.submit import DryRun

submit_app = typer.Typer(
    help="Submit a batch run (convert, train, evaluate, train-tabular) to the local machine, Slurm or HTCondor.",
    no_args_is_help=True,
)
task_app = typer.Typer(help="Commands that batch jobs run (not for direct use).", no_args_is_help=True)
app.add_typer(submit_app, name="submit", rich_help_panel="Batch")
app.add_typer(task_app, name="task", hidden=True)

PASS = {"allow_extra_args": True, "ignore_unknown_options": True}
# A command's parameters as typer builds them. typer (>= 0.26) vendors click as the private typer._click,
# whose Context and Parameter classes have no public name: the overrides below take ``ctx: Any``.
Param = TyperArgument | TyperOption
FROM_USER = frozenset({"COMMANDLINE", "ENVIRONMENT"})  # ParameterSource member names: given on the command line or by a variable

# Options shared by every submit command: (parameter, type, typer option).
O_RUNS_DIR = typer.Option(None, "--runs-dir", help="Where run directories go (default $SBT_BATCH_RUNS or ./runs).")
SUBMIT_OPTIONS: list[tuple[str, Any, Any]] = [
    ("backend", str | None, typer.Option(None, "--backend", "-b", help="local (default), slurm or condor.")),
    ("site", str | None, typer.Option(None, "--site", help="Site profile: a YAML path or a name in ~/.config/sbt-batch/.")),
    ("name", str | None, typer.Option(None, "--name", help="Run name (default: the command); the run directory is NAME-<UTC time>.")),
    ("runs_dir", Path | None, O_RUNS_DIR),
    ("image", str | None, typer.Option(None, "--image", help="Run each task inside this container image.")),
    ("bind", list[str] | None, typer.Option(None, "--bind", help="Path bound into the container (repeatable).")),
    ("partition", str | None, typer.Option(None, "--partition", help="Slurm partition.")),
    ("account", str | None, typer.Option(None, "--account", help="Slurm account.")),
    ("time", str | None, typer.Option(None, "--time", help="Wall time per task: MINUTES, HH:MM:SS or D-HH:MM:SS.")),
    ("mem", str | None, typer.Option(None, "--mem", help="Memory per task, e.g. 4G.")),
    ("cpus", int | None, typer.Option(None, "--cpus", help="CPUs per task.")),
    ("gpus", int | None, typer.Option(None, "--gpus", help="GPUs per task.")),
    ("max_running", int | None, typer.Option(None, "--max-running", help="At most N tasks at once (Slurm %N throttle, local pool size).")),
    ("template", Path | None, typer.Option(None, "--template", help="Your own copy of the backend's job template.")),
    ("directive", list[str] | None, typer.Option(None, "--directive", help="Extra scheduler directive, e.g. --directive=--qos=short (repeatable).")),
    ("after", str | None, typer.Option(None, "--after", help="Start only after this run completed successfully.")),
    ("retries", int | None, typer.Option(None, "--retries", help="Retry a failed task up to N times (not after a one-line bad-input error; exit 75 resumes).")),
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


class SubmitCommand(TyperCommand):
    """A ``submit X`` command that also takes every option of ``sbt-batch X``, copied from the real command.

    Options that other code adds to ``convert``/``train``/... appear here by themselves. A spelling that a
    submit option already uses stays the submit option's (``-b`` is --backend, so train's --background is
    spelled in full); options that ``submit`` sets per task (``SUBMIT_SETS``) are not offered.
    """

    target = ""

    def _borrowed(self, ctx: Any) -> list[Param]:
        cached: list[Param] | None = getattr(self, "_borrowed_params", None)
        if cached is not None:
            return cached
        own = super().get_params(ctx)
        taken = {o for p in own for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        own_names = {p.name for p in own}
        out: list[Param] = []
        for param in real_command(self.target).params:
            if param.name in SUBMIT_SETS.get(self.target, ()) or param.name == "help":
                continue
            if isinstance(param, TyperArgument):
                if param.name in own_names:
                    continue
                out.append(copy.copy(param))
            elif isinstance(param, TyperOption):
                twin = copy.copy(param)
                twin.opts = [o for o in param.opts if o not in taken]
                twin.secondary_opts = [o for o in param.secondary_opts if o not in taken]
                if not twin.opts:
                    continue
                twin.rich_help_panel = f"Options of sbt-batch {self.target}"
                twin.name = BORROWED + str(param.name)  # never the same key as a submit option's
                out.append(twin)
        self._borrowed_params = out
        return out

    def get_params(self, ctx: Any) -> list[Any]:
        """The submit options, then the borrowed ones, then --help."""
        own = super().get_params(ctx)
        help_opts = [p for p in own if p.name == "help"]
        return [p for p in own if p.name != "help"] + self._borrowed(ctx) + help_opts

    def invoke(self, ctx: Any) -> Any:
        """Turn the borrowed options given on the command line back into the task's argv (``ctx.meta``)."""
        positional: list[str] = []
        words: list[str] = []
        for param in self._borrowed(ctx):
            name = str(param.name)
            value = ctx.params.pop(name, None)
            source = ctx.get_parameter_source(name)
            if source is None or source.name not in FROM_USER:
                continue
            if isinstance(param, TyperArgument):
                positional += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            else:
                words += option_words(param, value)
        ctx.meta["sbt_task_argv"] = positional + words
        return super().invoke(ctx)


BORROWED = "cmd__"
# Options of the real command that `submit` sets for every task itself.
SUBMIT_SETS = {"convert": ("inputs", "output"), "train-tabular": ("out", "repeats", "repeat_index")}


def option_words(param: TyperOption, value: Any) -> list[str]:
    """The command-line words that give option ``param`` the parsed ``value``."""
    name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    if getattr(param, "is_flag", False):
        if value:
            return [name]
        return [param.secondary_opts[0]] if param.secondary_opts else []
    def text(v: Any) -> str:
        return str(v)
    if getattr(param, "multiple", False):
        return [w for v in value or () for w in (name, *(map(text, v) if isinstance(v, (list, tuple)) else [text(v)]))]
    if param.nargs != 1 and isinstance(value, (list, tuple)):
        return [name, *map(text, value)]
    return [name, text(value)]


def real_command(kind: str) -> TyperCommand:
    """The click command of ``sbt-batch KIND`` (convert, train, evaluate, train-tabular)."""
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        if name == kind:
            command = typer.main.get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                       rich_markup_mode=app.rich_markup_mode)
            assert isinstance(command, TyperCommand)  # a registered command, never a group
            return command
    raise UserError(f"submit: no command '{kind}'")  # pragma: no cover


def check_task_argv(argv: list[str]) -> None:
    """Parse a task's argv with the real command (nothing runs): one-line UserError for what it would refuse."""
    kind, args = argv[0], list(argv[1:])
    command = real_command(kind)
    try:
        ctx = command.make_context(kind, args)
    except typer.Exit:
        return
    except typer.TyperException as exc:  # click's usage errors (typer's vendored ClickException derives from it)
        raise UserError(f"submit {kind}: {exc.format_message()} (the options of `sbt-batch {kind}` apply; see --help)") from None
    ctx.close()


def _task_argv(ctx: typer.Context) -> list[str]:
    """The borrowed options (as words), then what came after ``--``."""
    return [*ctx.meta.get("sbt_task_argv", []), *ctx.args]


def print_submitted(result: Run | DryRun) -> None:
    """Show what ``submit_new_run`` did: the submitted run in one line, or the --dry-run job script and task table."""
    from sbt_batch.batch.show import task_lines
    from sbt_batch.batch.submit import DryRun, submitted_message
    from sbt_batch.common.console import console

    if not isinstance(result, DryRun):
        console.print(submitted_message(result))
        return
    console.print(f"[bold]{result.backend} job script ({result.run.path} would be created):[/]")
    console.print(result.script, markup=False, highlight=False, soft_wrap=True)
    console.print(f"[bold]{len(result.run.tasks)} task(s):[/]")
    for line in task_lines(result.run):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _do_submit(kind: str, tasks_fn: Callable[[dict[str, Any]], list[Task]], opts: dict[str, Any], options: dict[str, Any] | None = None) -> None:
    import dataclasses

    from sbt_batch.batch.submit import SubmitOptions, submit_new_run

    fields = {f.name for f in dataclasses.fields(SubmitOptions)}
    print_submitted(submit_new_run(kind, tasks_fn, SubmitOptions(**{k: v for k, v in opts.items() if k in fields}), options or {},
                                   check_task=check_task_argv))


def _command_class(kind: str) -> type[SubmitCommand]:
    return type(f"Submit{kind.title().replace('-', '')}Command", (SubmitCommand,), {"target": kind})


@submit_app.command("convert", cls=_command_class("convert"))
@submit_options
def submit_convert(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., help="Input ntuples (files, directories, globs, @list files or root:// / https:// URLs)."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Where parts/ and the merged HDF5 go."),
    files_per_job: int | None = typer.Option(None, "--files-per-job", "-k", help="Input files per task [1]."),
    convert_args: str | None = typer.Option(None, "--convert-args", hidden=True, help="Deprecated: give the convert options directly."),
    opts: dict[str, Any] = SHARED,
) -> None:
    """Convert ntuples to HDF5 as a batch run: one task per --files-per-job inputs; takes every `sbt-batch convert` option."""
    import shlex

    from sbt_batch.batch.kinds import convert_tasks
    from sbt_batch.batch.submit import resolve_inputs

    out = output_dir.absolute()
    try:
        extra = [*_task_argv(ctx), *shlex.split(convert_args or "")]
    except ValueError as exc:
        raise UserError(f"--convert-args: {exc}") from None
    if convert_args:
        from sbt_batch.common.console import err_console

        err_console.print("warning: --convert-args is deprecated; give the `sbt-batch convert` options directly", markup=False)
    files = resolve_inputs(inputs)
    per_job = 1 if files_per_job is None else files_per_job
    _do_submit("convert", lambda settings: convert_tasks(files, per_job, out, extra, settings["resources"]["cpus"]), opts, {"output_dir": str(out), "merged": str(out / "merged.h5"), "make_dirs": [str(out / "parts")]})


def _single(kind: str, ctx: typer.Context, opts: dict[str, Any]) -> None:
    from sbt_batch.batch.kinds import single_task

    argv = _task_argv(ctx)
    _do_submit(kind, lambda _settings: single_task(kind, argv), opts)


@submit_app.command("train", context_settings=PASS, cls=_command_class("train"))
@submit_options
def submit_train(
    ctx: typer.Context,
    opts: dict[str, Any] = SHARED,
    nodes: int | None = typer.Option(None, "--nodes", help="Horovod: nodes for one multi-rank training."),
    ntasks: int | None = typer.Option(None, "--ntasks", help="Horovod: ranks in total."),
    ntasks_per_node: int | None = typer.Option(None, "--ntasks-per-node", help="Horovod: ranks per node."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", help="Horovod: GPUs per node (default: one rank each)."),
    mpi_launcher: str | None = typer.Option(None, "--mpi-launcher", help="Slurm ranks: srun (--mpi=pmix) | mpirun [srun]."),
) -> None:
    """Submit one `sbt-batch train ...` task (N Horovod ranks with --ntasks/--nodes); takes every `train` option (or after `--`)."""
    from sbt_batch.batch.kinds import single_task
    from sbt_batch.batch.ranks import train_submit_settings

    ranks = {"nodes": nodes, "ntasks": ntasks, "ntasks_per_node": ntasks_per_node, "gpus_per_node": gpus_per_node,
             "mpi_launcher": mpi_launcher or "srun"}
    opts, argv = train_submit_settings({**opts, **ranks}, _task_argv(ctx))
    _do_submit("train", lambda _settings: single_task("train", argv, resume=True), opts)


@submit_app.command("evaluate", context_settings=PASS, cls=_command_class("evaluate"))
@submit_options
def submit_evaluate(
    ctx: typer.Context,
    opts: dict[str, Any] = SHARED,
) -> None:
    """Submit one `sbt-batch evaluate RUN_DIR ...` task; takes every `evaluate` option (or after `--`)."""
    _single("evaluate", ctx, opts)


@submit_app.command("train-tabular", context_settings=PASS, cls=_command_class("train-tabular"))
@submit_options
def submit_train_tabular(
    ctx: typer.Context,
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Training output; repeat i goes to DIR/repeat-i."),
    repeats: int | None = typer.Option(None, "--repeats", help="Independent trainings, one task each [1]."),
    opts: dict[str, Any] = SHARED,
) -> None:
    """Submit --repeats `sbt-batch train-tabular ... --repeat-index i` tasks; takes every `train-tabular` option (or after `--`)."""
    from sbt_batch.batch.kinds import repeat_tasks

    argv = _task_argv(ctx)
    out = output_dir.absolute()
    n = 1 if repeats is None else repeats
    _do_submit("train-tabular", lambda _settings: repeat_tasks("train-tabular", argv, n, out), opts, {"output_dir": str(out), "repeats": n, "make_dirs": [str(out)]})


@app.command("status", rich_help_panel="Batch")
def status(
    run: str = typer.Argument(..., help="Run directory, or a run name (newest run of that name)."),
    runs_dir: Path | None = O_RUNS_DIR,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until no task is queued or running."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = typer.Option(False, "--json", help="Print the task rows as JSON."),
) -> None:
    """Show each task's state, exit code, host and duration (one scheduler query per run)."""
    import os
    import sys
    import time as _time

    from sbt_batch.batch.core import run_status
    from sbt_batch.batch.run import Run
    from sbt_batch.batch.show import format_status, format_status_json, status_warnings

    the_run = Run.open(run, runs_dir)
    rows = run_status(the_run)
    for warning in status_warnings(rows):
        sys.stderr.write(warning + "\n")
    if as_json:
        sys.stdout.write(format_status_json(the_run, rows))
        return
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(format_status(the_run, rows, color))
    while watch and any(r.active for r in rows):  # refresh until nothing is queued or running
        _time.sleep(interval)
        rows = run_status(Run.open(the_run.path))
        sys.stdout.write(("\033[H\033[J" if color else "\n") + format_status(the_run, rows, color))
        sys.stdout.flush()


@app.command("collect", rich_help_panel="Batch")
def collect(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Path | None = O_RUNS_DIR,
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Merge what is there even if tasks failed."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Merged output (convert: default OUTPUT_DIR/merged.h5)."),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Merge parts written by different sbt-batch versions."),
) -> None:
    """Check every task's outputs, merge them, and list failed or missing tasks (exit 4 when incomplete)."""
    from sbt_batch.batch.collect import CollectIncomplete, collect_run
    from sbt_batch.batch.run import Run
    from sbt_batch.common.provenance import allow_mixed_versions

    with allow_mixed_versions(allow_mixed):
        try:
            report = collect_run(Run.open(run, runs_dir), allow_partial=allow_partial, output=output)
        except CollectIncomplete as exc:
            print_collect(exc.report)
            raise
    print_collect(report)


def print_collect(report: CollectReport) -> None:
    """Show a CollectReport: the collector's display, the failed/missing tasks with their stderr (on stderr), the merge, the counts."""
    from rich.markup import escape

    from sbt_batch.batch.collect import inputs_text
    from sbt_batch.batch.core import summarize
    from sbt_batch.common.console import console, err_console

    result = report.result
    for item in result.display if result is not None else []:
        console.print(item)
    for p in report.problems:
        what = inputs_text(report.run, p.index)
        err_console.print(f"[red]task {p.index}[/] {escape(p.message)}" + (f"  [dim]({escape(what)})[/]" if what else ""))
        for line in p.stderr_tail:
            err_console.print(f"    {escape(line)}", highlight=False)
    if result is None:
        return
    if result.output:
        console.print(f"merged {result.summary.get('events', '?')} events from {result.summary.get('parts', '?')} part(s) into {result.output}")
    console.print(summarize(report.rows))


@app.command("resubmit", rich_help_panel="Batch")
def resubmit(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Path | None = O_RUNS_DIR,
    failed: bool = typer.Option(False, "--failed", help="Tasks that failed, were cancelled, timed out or were lost."),
    missing: bool = typer.Option(False, "--missing", help="Tasks that never ran or were never submitted."),
    invalid: bool = typer.Option(False, "--invalid", help="Completed tasks whose outputs were deleted, truncated or hold the wrong event count."),
    unfinished: bool = typer.Option(False, "--unfinished", help="Failed, missing and invalid (the default)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Exactly these tasks, e.g. 5000 or 3,7,10-20."),
    time: str | None = typer.Option(None, "--time", help="New wall time for the resubmitted tasks."),
    mem: str | None = typer.Option(None, "--mem", help="New memory for the resubmitted tasks."),
) -> None:
    """Submit only the failed and/or missing tasks again, as one new array in the same run."""
    from sbt_batch.batch.submit import resubmit as resubmit_tasks
    from sbt_batch.common.console import console

    if unfinished or not (failed or missing or invalid):
        failed = missing = invalid = True
    done = resubmit_tasks(run, runs_dir, failed=failed, missing=missing, time=time, mem=mem, invalid=invalid, tasks=tasks)
    if not done.indices:
        console.print(f"nothing to resubmit in {done.run.path.name}")
        return
    shown = ", ".join(map(str, done.indices[:20])) + (" ..." if len(done.indices) > 20 else "")
    console.print(f"resubmitted {len(done.indices)} task(s) of {done.run.path.name}: {shown}")


@app.command("cancel", rich_help_panel="Batch")
def cancel(
    run: str = typer.Argument(..., help="Run directory or run name."),
    runs_dir: Path | None = O_RUNS_DIR,
) -> None:
    """Cancel the run's queued and running tasks."""
    from sbt_batch.batch.core import cancel_run
    from sbt_batch.batch.run import Run
    from sbt_batch.common.console import console

    the_run = Run.open(run, runs_dir)
    cancelled = cancel_run(the_run)
    console.print(f"cancelled {len(cancelled)} task(s) of {the_run.path.name}" if cancelled else "nothing to cancel")


@app.command("runs", rich_help_panel="Batch")
def runs(runs_dir: Path | None = O_RUNS_DIR) -> None:
    """List the runs with a one-line state each."""
    import sys

    from sbt_batch.batch.show import format_runs

    text, warnings = format_runs(runs_dir)
    for warning in warnings:
        sys.stderr.write(warning + "\n")
    sys.stdout.write(text)


@task_app.command("run")
def task_run(
    run_dir: Path = typer.Argument(...),
    index: int = typer.Argument(...),
    map_file: Path | None = typer.Option(None, "--map", help="Packed job: run the tasks on line INDEX of this file, one after another."),
) -> None:
    """Run task INDEX of RUN_DIR and record tasks/INDEX/state.json (what every batch job executes)."""
    from sbt_batch.batch.task import run_packed, run_task

    code = run_task(run_dir, index) if map_file is None else run_packed(run_dir, map_file, index)
    raise typer.Exit(code)


@task_app.command("wait-run")
def task_wait_run(
    run_dir: Path = typer.Argument(...),
    interval: float = typer.Option(5.0, "--interval", help="Seconds between looks at the state files."),
) -> None:
    """Wait until every task of RUN_DIR completed (exit 0) or one failed (exit 1): the PRE script of a DAG for --after."""
    from sbt_batch.batch.core import wait_for_run

    wait_for_run(str(run_dir), interval)  # a UserError (exit 1) names the tasks that failed


@task_app.command("probe", context_settings=PASS)
def task_probe(
    ctx: typer.Context,
    sleep: float = typer.Option(0.0, "--sleep", help="Seconds to sleep before exiting."),
    exit_code: int = typer.Option(0, "--exit", help="Exit code to return."),
    done_if: Path | None = typer.Option(None, "--done-if", help="Exit 0 at once when this file exists."),
    fail_first: int = typer.Option(0, "--fail-first", help="With --counter: exit --exit for the first N runs, then 0."),
    counter: Path | None = typer.Option(None, "--counter", help="File counting the runs of this probe."),
    checkpoint_on_term: bool = typer.Option(False, "--checkpoint-on-term", help="On SIGTERM exit 75 (as train does)."),
    spawn: bool = typer.Option(False, "--spawn", help="Start a child `sleep` and print its pid (process-group tests)."),
) -> None:
    """Print the arguments, host and directory as JSON, then sleep and exit (to test a batch system)."""
    import json
    import os
    import signal as _signal
    import socket
    import subprocess
    import time as _time

    info: dict[str, Any] = {"args": list(ctx.args), "host": socket.gethostname(), "cwd": os.getcwd(), "pid": os.getpid(),
                            "x509_user_proxy": os.environ.get("X509_USER_PROXY")}
    if spawn:
        info["child"] = subprocess.Popen(["sleep", "600"]).pid
    if checkpoint_on_term:
        _signal.signal(_signal.SIGTERM, lambda *_: os._exit(75))
    if counter is not None:
        runs = int(counter.read_text() or 0) + 1 if counter.exists() else 1
        counter.write_text(str(runs))
        info["run"] = runs
        if runs > fail_first:
            exit_code = 0
    print(json.dumps(info), flush=True)
    if counter is not None and fail_first and exit_code:
        raise typer.Exit(exit_code)
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
    from sbt_batch.batch.backends.condor_parallel import run_node

    raise typer.Exit(run_node(run_dir, index))


@task_app.command("rank-probe")
def task_rank_probe(
    out_dir: Path = typer.Argument(...),
    fail_rank: int | None = typer.Option(None, "--fail-rank", help="This rank exits with --exit."),
    exit_code: int = typer.Option(0, "--exit", help="Exit code of --fail-rank."),
    sleep: float = typer.Option(0.0, "--sleep", help="Seconds to sleep before exiting."),
) -> None:
    """Write this Horovod rank's environment after a rendezvous round trip (to test a multi-node launch)."""
    from sbt_batch.batch.backends.condor_parallel import rank_probe

    raise typer.Exit(rank_probe(out_dir, fail_rank, exit_code, sleep))
