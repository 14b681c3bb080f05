"""The Slurm backend against the real local cluster (scripts/slurm-cluster.sh): arrays, real failures, resubmit, collect.

The time-limit case takes about 67 s in Slurm, so its run is submitted first (module fixture) and
checked last, while the other tests run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from batchtest import (
    assert_same_hdf5,
    probe_output,
    probe_tasks,
    sample_ntuples,
    settled,
    states,
    submit_probe,
    submitted_run,
    wait_rows,
)
from conftest import assert_one_line_error, run_sbt

from sbt_batch.batch.run import Run
from sbt_batch.common.errors import EXIT_INCOMPLETE

pytestmark = pytest.mark.slurm
NASTY = "we ird; $(touch PWNED) 'q' \"d\" `x` #h %A"


@pytest.fixture(scope="module")
def timeout_run(slurm_cluster, tmp_path_factory):
    """A probe run with --time 1 whose task sleeps until killed by the time limit (submitted before the other tests)."""
    tmp = tmp_path_factory.mktemp("timeout")
    marker = tmp / "go"
    run = submit_probe(tmp / "runs", "slurm", probe_tasks(1, sleep=600, done_if=marker), name="timeout", time="1")
    return run, marker


@pytest.fixture(scope="module")
def ntuples(slurm_cluster, tmp_path_factory, timeout_run) -> Path:
    """Three small sample ntuples (real ROOT files)."""
    return sample_ntuples(tmp_path_factory.mktemp("nt"), "signal", 3, 40, "--seed", "7")


def test_convert_array_end_to_end_matches_direct(tmp_path, ntuples):
    runs = tmp_path / "runs"
    run = submitted_run(run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "--backend", "slurm", "--runs-dir", runs,
                             "--max-running", "2", "--time", "5", "--mem", "1G"), runs)
    sub = run.submissions[0]
    assert sub["status"] == "submitted" and sub["job_ids"] == {str(i): f"{sub['backend']['array_job_id']}_{i}" for i in range(3)}
    script = (run.path / sub["script"]).read_text()
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --time=00:05:00" in script
    assert run_sbt("status", run.path).returncode == 0
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 3, timeout=120)
    collected = run_sbt("collect", run.path)
    assert collected.returncode == 0, collected.stderr
    direct = run_sbt("convert", ntuples, "-o", tmp_path / "direct.h5", "--workers", "1")
    assert direct.returncode == 0, direct.stderr
    assert_same_hdf5(tmp_path / "out" / "merged.h5", tmp_path / "direct.h5")


def test_failed_and_cancelled_tasks_resubmit_and_collect(tmp_path, ntuples):
    inputs = tmp_path / "in"
    shutil.copytree(ntuples, inputs)
    bad = sorted(inputs.glob("*.root"))[1]
    shutil.copy(bad, tmp_path / "good.root")
    bad.write_bytes(b"garbage")
    runs = tmp_path / "runs"
    run = submitted_run(run_sbt("submit", "convert", inputs, "-o", tmp_path / "out", "--backend", "slurm", "--runs-dir", runs, "--hold"), runs)
    rows = wait_rows(run, lambda r: states(r) == ["held"] * 3, timeout=30)
    array = run.submissions[0]["backend"]["array_job_id"]
    subprocess.run(["scontrol", "release", f"{array}_0,{array}_1"], check=True, capture_output=True)
    rows = wait_rows(run, lambda r: states(r)[:2] == ["completed", "failed"], timeout=120)
    assert rows[2].state == "held" and rows[1].exit_code == 1
    cancel = run_sbt("cancel", run.path)
    assert cancel.returncode == 0 and "cancelled 1 task" in cancel.stdout, cancel.stderr
    rows = wait_rows(run, lambda r: r[2].state == "cancelled", timeout=30)
    collected = run_sbt("collect", run.path)
    assert collected.returncode == EXIT_INCOMPLETE
    assert_one_line_error(collected, "incomplete", "2 of 3")
    assert "task 1" in collected.stderr and bad.name in collected.stderr
    first = run.read_state(0)
    shutil.copy(tmp_path / "good.root", bad)
    again = run_sbt("resubmit", run.path, "--failed")
    assert again.returncode == 0 and "resubmitted 2 task(s)" in again.stdout, again.stderr
    run = Run.open(run.path)
    assert run.submissions[1]["indices"] == [1, 2]
    script = (run.path / run.submissions[1]["script"]).read_text()  # issue 13: array ids start at 0, with an offset
    assert "#SBATCH --array=0-1" in script and '"$((SLURM_ARRAY_TASK_ID + 1))"' in script
    rows = wait_rows(run, lambda r: states(r) == ["completed"] * 3, timeout=120)
    assert [r.attempt for r in rows] == [1, 2, 2]
    assert run.read_state(0) == first
    assert run_sbt("collect", run.path).returncode == 0
    assert run_sbt("convert", inputs, "-o", tmp_path / "direct.h5", "--workers", "1").returncode == 0
    assert_same_hdf5(tmp_path / "out" / "merged.h5", tmp_path / "direct.h5")


def test_special_characters_reach_the_task_unchanged(tmp_path, slurm_cluster):
    runs = tmp_path / NASTY / "runs"
    args = [NASTY, "a;b", "$(id)", "`id`", "%A%a"]
    run = submit_probe(runs, "slurm", probe_tasks(2, args=args), name=NASTY)
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 2, timeout=60)
    out = probe_output(run, 1)
    assert out["args"] == [*args, "1"] and out["cwd"] == os.getcwd()  # tasks run where `submit` ran
    names = subprocess.run(["squeue", "-h", "-t", "all", "-j", run.submissions[0]["backend"]["array_job_id"], "-o", "%j"],
                           capture_output=True, text=True).stdout.splitlines()
    assert names and set(names) == {NASTY}
    assert not list(tmp_path.rglob("PWNED"))


def test_after_dependency(tmp_path, slurm_cluster):
    first = submit_probe(tmp_path / "runs", "slurm", probe_tasks(2, sleep=3), name="first")
    second = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1), name="second", after=str(first.path))
    script = (second.path / second.submissions[0]["script"]).read_text()
    array = first.submissions[0]["backend"]["array_job_id"]
    assert f"#SBATCH --dependency=afterok:{array}_0:{array}_1" in script
    rows = wait_rows(second, settled, timeout=60)
    assert states(rows) == ["completed"]
    assert Run.open(first.path).read_state(0)["finished"] <= second.read_state(0)["started"]


def test_second_submit_same_name_is_new_run(tmp_path, slurm_cluster):
    a = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1), name="same")
    b = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1), name="same")
    assert a.path != b.path
    assert a.submissions[0]["job_ids"] != b.submissions[0]["job_ids"]


def test_status_of_1000_held_tasks_is_one_query(tmp_path, slurm_cluster):
    run = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1000), name="many", hold=True)
    try:
        result = run_sbt("status", run.path, "--json")
        assert result.returncode == 0, result.stderr
        assert result.stdout.count('"held"') == 1000
    finally:
        assert run_sbt("cancel", run.path).returncode == 0


def test_timeout_then_resubmit(timeout_run):
    run, marker = timeout_run
    rows = wait_rows(run, lambda r: r[0].state == "timeout", timeout=150, interval=2)
    assert rows[0].state == "timeout"
    marker.touch()
    result = run_sbt("resubmit", run.path, "--failed", "--time", "2")
    assert result.returncode == 0, result.stderr
    rows = wait_rows(run, lambda r: states(r) == ["completed"], timeout=60)
    assert rows[0].attempt == 2
    assert (run.task_dir(0) / "attempt-1" / "state.json").exists()
