"""Task lists for each kind of run: convert (chunks of input files), train/evaluate (one task), train-tabular (repeats)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sbt_batch.batch.run import Task
from sbt_batch.common.errors import UserError

PART_PATTERN = "part-{:05d}.h5"


def convert_tasks(inputs: Sequence[Path | str], files_per_job: int, output_dir: Path, extra: Sequence[str] = (), workers: int = 1) -> list[Task]:
    """Split ``inputs`` (in order) into chunks of ``files_per_job``; task i converts chunk i to ``parts/part-i.h5``."""
    extra = list(extra)
    if not any(a in {"--workers", "-j"} or a.startswith("--workers=") for a in extra):
        extra += ["--workers", str(workers)]  # 1: in-process, no dask cluster inside a batch task
    if files_per_job < 1:
        raise UserError(f"--files-per-job: must be at least 1, got {files_per_job}")
    if not inputs:
        raise UserError("convert: no input files")
    parts = output_dir / "parts"
    tasks = []
    for i, start in enumerate(range(0, len(inputs), files_per_job)):
        chunk = [str(p) for p in inputs[start : start + files_per_job]]  # URLs (str) pass unchanged: the task reads them remotely
        out = str(parts / PART_PATTERN.format(i))
        tasks.append(Task(index=i, argv=["convert", *chunk, "--output", out, *extra], inputs=chunk, outputs=[out]))
    return tasks


def option_value(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--opt VALUE`` / ``--opt=VALUE`` among ``names`` in ``argv`` (None when absent)."""
    value = None
    for k, word in enumerate(argv):
        if word == "--":
            break
        if word in names and k + 1 < len(argv):
            value = argv[k + 1]
        for n in names:
            if n.startswith("--") and word.startswith(n + "="):
                value = word[len(n) + 1:]
    return value


def single_task(command: str, argv: Sequence[str], outputs: Sequence[str] = (), resume: bool = False) -> list[Task]:
    """One task running ``sbt-batch COMMAND ARGV...`` (train, evaluate); ``resume``: after exit 75 run ``COMMAND --resume OUT``."""
    meta = {}
    out = option_value(argv, "--out", "-o") if resume else None
    if out:
        meta["resume_argv"] = [command, "--resume", str(Path(out).absolute())]
    return [Task(index=0, argv=[command, *argv], outputs=list(outputs), meta=meta)]


def repeat_tasks(command: str, argv: Sequence[str], repeats: int, output_dir: Path) -> list[Task]:
    """``repeats`` tasks of ``sbt-batch COMMAND ARGV --out DIR --repeat-index i`` (train-tabular writes DIR/repeat-i)."""
    if repeats < 1:
        raise UserError(f"--repeats: must be at least 1, got {repeats}")
    return [
        Task(
            index=i,
            argv=[command, *argv, "--out", str(output_dir), "--repeat-index", str(i)],
            outputs=[str(output_dir / f"repeat-{i}")],
        )
        for i in range(repeats)
    ]
