"""Helpers shared by the batch tests: sample ntuples, probe runs, waiting for states, comparing HDF5."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import run_sbt

from sbt_batch.batch.core import TaskStatus, run_status
from sbt_batch.batch.run import Run, Task
from sbt_batch.batch.submit import SubmitOptions, submit_new_run


def sample_ntuples(folder: Path, kind: str, files: int, events: int, *extra: str) -> Path:
    """Write ``files`` real ROOT ntuples into ``folder`` with `sbt-batch sample-ntuples` (asserts success)."""
    result = run_sbt("sample-ntuples", folder, "--kind", kind, "--files", str(files), "--events", str(events), *extra)
    assert result.returncode == 0, result.stderr
    return folder


def probe_tasks(n: int, *, sleep: float = 0, exit_code: int = 0, done_if: Path | None = None, args: list[str] | None = None) -> list[Task]:
    """``n`` tasks of ``sbt-batch task probe`` (prints its args as JSON, sleeps, exits)."""
    extra = ["--sleep", str(sleep), "--exit", str(exit_code)]
    if done_if is not None:
        extra += ["--done-if", str(done_if)]
    return [Task(index=i, argv=["task", "probe", *extra, "--", *(args or []), str(i)]) for i in range(n)]


def submit_probe(runs_dir: Path, backend: str, tasks: list[Task], name: str = "probe", **opts: Any) -> Run:
    """Create and submit a probe run through the library (as `submit` does)."""
    run = submit_new_run("probe", lambda _s: tasks, SubmitOptions(backend=backend, name=name, runs_dir=runs_dir, **opts), {})
    assert run is not None
    return run


def submitted_run(result, runs: Path) -> Run:
    """The run that a successful ``sbt-batch submit`` (``result``) just created under ``runs``."""
    assert result.returncode == 0, result.stderr
    return Run.open(sorted(p for p in runs.iterdir() if not p.name.startswith("."))[-1])


def wait_rows(run: Run, done, timeout: float = 60, interval: float = 0.3) -> list[TaskStatus]:
    """Poll `status` until ``done(rows)`` is true; return the rows (assert on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        run = Run.open(run.path)
        rows = run_status(run)
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {[(r.index, r.state, r.reason) for r in rows]}")
        time.sleep(interval)


def settled(rows: list[TaskStatus]) -> bool:
    """No task is queued or running."""
    return not any(r.active for r in rows)


def states(rows: list[TaskStatus]) -> list[str]:
    """The state of every task, in index order."""
    return [r.state for r in rows]


def probe_output(run: Run, index: int) -> dict:
    """What task ``index``'s probe printed."""
    return json.loads((run.task_dir(index) / "stdout").read_text().splitlines()[0])


def assert_same_hdf5(a: Path, b: Path) -> None:
    """The datasets and the inputs/entries provenance of two converted files are identical."""
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for key in fb:
            assert fa[key].shape == fb[key].shape, key
            assert fa[key].dtype == fb[key].dtype, key
            assert np.array_equal(fa[key][()], fb[key][()]), key
        for attr in ("entries",):
            assert list(fa.attrs[attr]) == list(fb.attrs[attr])
        names = lambda f: [Path(str(x)).name for x in f.attrs["inputs"]]
        assert names(fa) == names(fb)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in {"Z", "X"}
    except (OSError, IndexError):
        return False
