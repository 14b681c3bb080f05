"""The batch collector of convert runs: check every part (exists, opens, events == input entries, image shape), merge them.

Registered in :data:`sbt_batch.batch.collect.COLLECTORS` (``collect``) and ``VALIDATORS`` (``resubmit --invalid``)
by name, so that the batch layer never imports this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sbt_batch.batch.collect import CollectResult, Problem
from sbt_batch.batch.core import COMPLETED, TaskStatus
from sbt_batch.batch.run import Run, Task
from sbt_batch.common.errors import EXIT_INCOMPLETE, InputFileError, UserError, one_line
from sbt_batch.convert.merge import merge_outputs
from sbt_batch.convert.names import ET_DATASET
from sbt_batch.convert.source import read_entries


def check_convert_part(task: Task, shape: tuple[int, ...] | None) -> tuple[int, tuple[int, ...]]:
    """Check one convert part (exists, opens, events == input entries, 2-D images); return (events, image shape)."""
    import h5py

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


def check_parts(run: Run, rows: Sequence[TaskStatus]) -> tuple[list[Path], int, list[Problem]]:
    """Check the part of every completed task: (good parts in input order, their events, a Problem per bad part)."""
    good: list[Path] = []
    expected = 0
    shape = None
    bad: list[Problem] = []
    for r in rows:
        task = run.tasks[r.index]
        if r.state != COMPLETED or not task.outputs:
            continue
        try:
            entries, shape = check_convert_part(task, shape)
        except UserError as exc:
            bad.append(Problem(r.index, "bad output", str(exc)))
            continue
        good.append(Path(task.outputs[0]))
        expected += entries
    return good, expected, bad


def invalid_parts(run: Run, rows: Sequence[TaskStatus]) -> list[Problem]:
    """Completed tasks whose part is missing, damaged or holds the wrong event count (``resubmit --invalid``)."""
    return check_parts(run, rows)[2]


def collect_convert(run: Run, rows: Sequence[TaskStatus], allow_partial: bool, output: Path | None, problems: list[Problem]) -> CollectResult:
    """Check each part (exists, opens, events == input entries, image shape) and merge them in input order."""
    good, expected, bad = check_parts(run, rows)
    if bad and not allow_partial:
        return CollectResult(None, {}, bad)
    if not good:
        raise UserError(f"{run.path.name}: no completed task output to merge", exit_code=EXIT_INCOMPLETE)
    out = Path(output or run.manifest.get("options", {}).get("merged") or run.path / "merged.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = merge_outputs(good, out, expected_events=expected)
    return CollectResult(out, {"events": merged.events, "parts": len(good)}, bad)
