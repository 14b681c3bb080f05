"""Building a run from command-line options and a site profile, submitting it, and resubmitting (the CLI prints the results)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbt_batch.batch.backend import get_backend
from sbt_batch.batch.collect import invalid_outputs
from sbt_batch.batch.core import resubmit_run, run_state, run_status, submit_run
from sbt_batch.batch.profiles import load_profile
from sbt_batch.batch.resources import check_count, parse_mem, parse_time
from sbt_batch.batch.run import TIMESTAMP_FORMAT, Run, Task, check_run_name, default_runs_dir
from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import check_writable_dir


@dataclass
class DryRun:
    """What ``--dry-run`` shows instead of submitting: the run that would be created, its backend and job script."""

    run: Run
    backend: str
    script: str


@dataclass
class Resubmitted:
    """What ``resubmit`` did: the run, the task indices submitted again (none: nothing to do) and their job ids."""

    run: Run
    indices: list[int]
    job_ids: dict[int, str]


@dataclass
class SubmitOptions:
    """Options shared by every ``submit`` command (None: take the profile's value, then the default)."""

    backend: str | None = None
    site: str | None = None
    name: str | None = None
    runs_dir: Path | None = None
    image: str | None = None
    bind: list[str] | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    max_running: int | None = None
    template: Path | None = None
    directive: list[str] | None = None
    after: str | None = None
    retries: int | None = None
    hold: bool = False
    dry_run: bool = False
    launcher: list[str] = field(default_factory=list)
    nodes: int | None = None
    ntasks: int | None = None


def resolve_inputs(items: Sequence[str]) -> list[Path | str]:
    """Expand INPUT arguments (files, dirs, globs, URLs, @lists) into absolute paths and URLs, in order.

    root:// and https:// URLs stay strings: the tasks read them remotely (and spool mode transfers nothing for them).
    """
    from sbt_batch.common.inputs import expand_inputs

    return [p if isinstance(p, str) else p.absolute() for p in expand_inputs(items)]


def build_settings(kind: str, opts: SubmitOptions, options: dict[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    """Merge options with the site profile and validate them: return (backend name, runs dir, manifest settings)."""
    profile = load_profile(opts.site)
    def pick(key, value):
        return value if value is not None else profile.get(key)
    backend = pick("backend", opts.backend) or "local"
    get_backend(backend)  # unknown backend -> one-line error before anything is written
    time_s = parse_time(pick("time", opts.time))
    mem_mb = parse_mem(pick("mem", opts.mem))
    cpus = check_count(pick("cpus", opts.cpus), "--cpus", 1)
    gpus = check_count(pick("gpus", opts.gpus), "--gpus", 0)
    max_running = check_count(pick("max_running", opts.max_running), "--max-running", 1)
    retries = check_count(pick("retries", opts.retries), "--retries", 0)
    template = opts.template
    if template is not None:
        template = template.absolute()
        if not template.is_file():
            raise UserError(f"--template {opts.template}: file not found")
    resources = {
        "cpus": cpus or 1,
        "gpus": gpus or 0,
        "time": pick("time", opts.time),
        "time_seconds": time_s,
        "mem": pick("mem", opts.mem),
        "mem_mb": mem_mb,
        "partition": pick("partition", opts.partition),
        "account": pick("account", opts.account),
        "accounting_group": profile.get("accounting_group"),
        "max_running": max_running,
        "retries": retries or 0,
        "hold": bool(opts.hold),
        "nodes": opts.nodes,
        "ntasks": opts.ntasks,
    }
    image = pick("image", opts.image)
    settings = {
        "image": image,
        "binds": list(profile.get("binds") or []) + list(opts.bind or []),
        "container_runtime": profile.get("container_runtime"),
        "sbt_command": profile.get("sbt_command"),
        "env": dict(profile.get("env") or {}),
        "setup": list(profile.get("setup") or []),
        "extra_directives": list(profile.get("extra_directives") or []) + list(opts.directive or []),
        "resources": resources,
        "site": profile.get("_path"),
        "condor": dict(profile.get("condor") or {}),
        "template": str(template) if template else None,
        "launcher": list(opts.launcher),
        "options": options,
        "workdir": os.getcwd(),  # tasks run here, so relative paths in their arguments mean what they meant at submit
        "after": resolve_after(opts.after, backend, opts.runs_dir) if opts.after else {},
    }
    runs_dir = Path(opts.runs_dir or profile.get("runs_dir") or default_runs_dir())
    return backend, runs_dir, settings


def resolve_after(ref: str, backend: str, runs_dir: Path | None) -> dict[str, Any]:
    """The dependency on run ``ref``: its path and the job ids still active ({} ids when it already completed)."""
    other = Run.open(ref, runs_dir)
    rows = run_status(other)
    state = run_state(rows)
    if state not in {"completed", "active"}:
        raise UserError(f"--after {ref}: run {other.path.name} is {state}; resubmit it first")
    active = [r.job_id for r in rows if r.active]
    if active and other.backend != backend:
        raise UserError(f"--after {ref}: run {other.path.name} runs on {other.backend}; a {backend} run can only wait for {backend} runs")
    return {"run": str(other.path), "backend": other.backend, "job_ids": active}


def submit_new_run(kind: str, tasks_fn: Callable[[dict[str, Any]], list[Task]], opts: SubmitOptions, options: dict[str, Any],
                   check_task: Callable[[list[str]], None] | None = None) -> Run | DryRun:
    """Create the run directory and submit every task in one scheduler call; with --dry-run return what would be submitted.

    ``tasks_fn(settings)`` builds the task list once the options and the site profile are merged
    (``settings["resources"]["cpus"]`` etc. are final). ``check_task(argv)`` validates a task's command
    line (a dry parse with the real command) before anything exists.
    """
    name = check_run_name(opts.name or kind)
    backend_name, runs_dir, settings = build_settings(kind, opts, options)
    backend = get_backend(backend_name)
    tasks = tasks_fn(settings)
    if check_task is not None and tasks:
        for t in {id(x): x for x in (tasks[0], tasks[-1])}.values():
            check_task(t.argv)
    # Rendered before anything exists: a value the job script cannot carry fails here, leaving no run behind.
    stamp = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    manifest = {"name": name, "kind": kind, "backend": backend_name, **settings, "tasks": [t.to_dict() for t in tasks], "submissions": []}
    draft = Run(runs_dir.absolute() / f"{name}-{stamp}", manifest)
    script = backend.render(draft, [t.index for t in tasks])
    if opts.dry_run:
        return DryRun(draft, backend_name, script)
    backend.check()
    backend.precheck(len(tasks))
    for d in options.get("make_dirs", []):
        try:
            Path(d).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{d}: cannot create output directory ({exc.strerror})") from None
        check_writable_dir(Path(d))
    run = Run.create(runs_dir, name, kind, backend_name, tasks, **settings)
    try:
        submit_run(run, backend)
    except UserError as exc:
        raise UserError(f"{exc}; run directory {run.path} kept, `sbt-batch resubmit` submits it") from None
    return run


def submitted_message(run: Run) -> str:
    """``submitted N task(s) to BACKEND: run DIR (job ID)``, from the run's newest submission."""
    job_ids = run.submissions[-1]["job_ids"] if run.submissions else {}
    first = next(iter(job_ids.values()), "")
    return f"submitted {len(run.tasks)} task(s) to {run.backend}: run {run.path} (job {first.rsplit('_', 1)[0]})"


def parse_task_list(text: str, count: int) -> list[int]:
    """``"3,7,1000-1200"`` -> sorted task indices (one-line UserError for a bad or out-of-range spec)."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        a, dash, b = part.partition("-")
        if not a.isdigit() or (dash and not b.isdigit()):
            raise UserError(f"--tasks: {part!r} is not an index or a range A-B")
        lo, hi = int(a), int(b) if dash else int(a)
        if lo > hi or hi >= count:
            raise UserError(f"--tasks: {part!r} is outside the run's tasks 0-{count - 1}")
        out.update(range(lo, hi + 1))
    return sorted(out)


def resubmit(ref: str, runs_dir: Path | None, failed: bool, missing: bool, time: str | None, mem: str | None,
             invalid: bool = False, tasks: str | None = None) -> Resubmitted:
    """`resubmit`: new array of the selected tasks in the same run; new --time/--mem apply to it.

    ``invalid``: also the completed tasks whose outputs fail the kind's checks (``collect.invalid_outputs``).
    """
    run = Run.open(ref, runs_dir)
    only = parse_task_list(tasks, len(run.tasks)) if tasks else None
    if time is not None:
        run.resources["time"], run.resources["time_seconds"] = time, parse_time(time)
    if mem is not None:
        run.resources["mem"], run.resources["mem_mb"] = mem, parse_mem(mem)
    if time is not None or mem is not None:
        run.save()
    backend = get_backend(run.backend)
    rows = run_status(run, backend)
    also = [p.index for p in invalid_outputs(run, rows)] if invalid and only is None else []
    indices, job_ids = resubmit_run(run, failed, missing, backend, also=also, only=only, rows=rows)
    return Resubmitted(run, indices, job_ids)
