"""slurmctld down: one-line errors, a consistent run directory, and status working again after a restart."""

from __future__ import annotations

import os
import signal
import time

import pytest
from batchtest import alive, probe_tasks, states, wait_rows
from conftest import assert_one_line_error, run_sbt
from slurm_fixtures import slurm_script

from sbt_batch.batch.run import Run

pytestmark = pytest.mark.slurm


def test_controller_down_then_back(tmp_path, slurm_cluster):
    runs = tmp_path / "runs"
    # one run submitted while the controller is up, so status has something to ask about
    up = Run.create(runs, "up", "probe", "slurm", probe_tasks(1, sleep=1))
    from sbt_batch.batch.core import submit_run

    submit_run(up)
    pid = int((slurm_cluster["base"] / "run" / "slurmctld.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        (tmp_path / "in.root").write_bytes(b"x")
        result = run_sbt("submit", "convert", tmp_path / "in.root", "-o", tmp_path / "out", "--backend", "slurm",
                         "--runs-dir", runs, "--name", "down")
        assert_one_line_error(result, "slurm: sbatch failed", "kept")
        down = Run.open("down", runs)
        assert down.submissions[0]["status"] == "failed" and down.submissions[0]["job_ids"] == {}
        assert (down.path / "manifest.json").is_file() and (down.path / "tasks").is_dir()  # tasks/<i>/: made by the wrapper (issue 13)
        # a run with unfinished tasks needs the controller: one line, no traceback
        assert_one_line_error(run_sbt("status", up.path), "slurm: squeue failed")
    finally:
        assert slurm_script("start").returncode == 0
    wait_rows(up, lambda rows: states(rows) == ["completed"], timeout=60)
    status = run_sbt("status", down.path)
    assert status.returncode == 0 and "unsubmitted" in status.stdout
    assert run_sbt("resubmit", down.path, "--missing").returncode == 0
    rows = wait_rows(Run.open(down.path), lambda r: not any(x.active for x in r), timeout=60)
    assert states(rows) == ["failed"]  # the input is not a ROOT file: the task really ran this time
    assert Run.open(down.path).submissions[1]["status"] == "submitted"
