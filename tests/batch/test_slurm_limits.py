"""Issue 13 on the real local Slurm, which runs with Slurm's default limits (MaxArraySize=1001, MaxJobCount=10000):
runs split into arrays with offsets, resubmission of a task above 1001, retries, requeue after exit 75, kill -9.

The requeue case waits for Slurm's own delay before a requeued job may start again (about 2 minutes), so its
run is submitted first (module fixture) and checked last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from batchtest import alive, probe_output, probe_tasks, settled, submit_probe, wait_rows
from conftest import run_sbt

from sbt_batch.batch.run import Run, Task

pytestmark = pytest.mark.slurm


def _limits() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.splitlines()) if k.strip()}


@pytest.fixture(scope="module")
def requeue_run(slurm_cluster, tmp_path_factory):
    """A task that checkpoints on SIGTERM (exit 75), with --retries 1; resuming runs the resume argv."""
    tmp = tmp_path_factory.mktemp("requeue")
    task = Task(index=0, argv=["task", "probe", "--sleep", "300", "--checkpoint-on-term", "--", "first"],
                meta={"resume_argv": ["task", "probe", "--", "resumed"]})
    run = submit_probe(tmp / "runs", "slurm", [task], name="requeue", retries=1)
    _wait_output(run, 0)  # the probe prints once its SIGTERM handler is installed
    job = run.submissions[0]["job_ids"]["0"]
    subprocess.run(["scancel", "--batch", "--signal=TERM", job], check=True, capture_output=True)  # as at a time limit / preemption
    return run


def test_cluster_runs_with_slurm_default_limits(slurm_cluster):
    limits = _limits()
    assert limits["MaxArraySize"] == "1001" and limits["MaxJobCount"] == "10000"


def test_1500_tasks_split_into_arrays_and_resubmit_one_above_1001(slurm_cluster, tmp_path):
    run = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1500), name="big", hold=True)
    sub = run.submissions[0]
    arrays = sub["backend"]["arrays"]
    assert [(a["offset"], a["count"]) for a in arrays] == [(0, 1001), (1001, 499)]
    assert all(int(j.split("_")[1]) < 1001 for j in sub["job_ids"].values())
    assert sub["job_ids"]["1400"] == f"{arrays[1]['job_id']}_399"
    assert "SLURM_ARRAY_TASK_ID + 1001" in (run.path / "scripts" / arrays[1]["script"]).read_text()
    t0 = time.monotonic()
    status = run_sbt("status", run.path)
    assert status.returncode == 0 and "1500 tasks: 1500 held" in status.stdout, status.stderr
    assert time.monotonic() - t0 < 5
    subprocess.run(["scontrol", "release", sub["job_ids"]["1400"]], check=True, capture_output=True)
    wait_rows(run, lambda rows: rows[1400].state == "completed", timeout=60)
    assert probe_output(run, 1400)["args"][-1] == "1400"
    cancel = run_sbt("cancel", run.path)
    assert cancel.returncode == 0 and "cancelled 1499 task" in cancel.stdout, cancel.stderr
    rows = wait_rows(run, lambda rows: rows[5].state == "cancelled" and rows[1499].state == "cancelled", timeout=30)
    assert rows[1400].state == "completed"
    again = run_sbt("resubmit", run.path, "--tasks", "1200")
    assert again.returncode == 0 and "resubmitted 1 task(s)" in again.stdout, again.stderr
    run = Run.open(run.path)
    second = run.submissions[-1]
    assert second["indices"] == [1200] and second["backend"]["arrays"][0]["offset"] == 1200
    assert second["job_ids"]["1200"].endswith("_0")
    rows = wait_rows(run, lambda rows: rows[1200].state == "completed", timeout=60)
    assert probe_output(run, 1200)["args"][-1] == "1200" and rows[1200].attempt == 2


def test_a_run_larger_than_the_room_left_is_packed(slurm_cluster, tmp_path, monkeypatch):
    """When slurmctld has room for fewer jobs than the run has tasks, each array job runs several tasks (map file)."""
    import sbt_batch.batch.backends.slurm as slurm

    # the real cluster has the default limits; make sbt-batch see a busy controller with room for 750 more jobs
    monkeypatch.setattr(slurm, "jobs_in_controller", lambda: 10000 - 1 - 750)
    run = submit_probe(tmp_path / "runs", "slurm", probe_tasks(1500), name="packed", hold=True)
    sub = run.submissions[0]
    assert sub["backend"]["pack"] == 2 and [a["jobs"] for a in sub["backend"]["arrays"]] == [750]
    assert sub["job_ids"]["1400"] == sub["job_ids"]["1401"] == f"{sub['backend']['array_job_id']}_700"
    assert "--map" in (run.path / sub["script"]).read_text()
    subprocess.run(["scontrol", "release", sub["job_ids"]["1400"]], check=True, capture_output=True)
    rows = wait_rows(run, lambda rows: rows[1400].state == rows[1401].state == "completed", timeout=60)
    assert probe_output(run, 1401)["args"][-1] == "1401" and rows[1399].state == "held"
    cancel = run_sbt("cancel", run.path)
    assert cancel.returncode == 0 and "cancelled 1498 task" in cancel.stdout, cancel.stderr


def test_run_larger_than_max_job_count_is_refused_before_anything_exists(slurm_cluster, tmp_path):
    runs = tmp_path / "runs"
    from sbt_batch.batch.submit import SubmitOptions, submit_new_run
    from sbt_batch.common.errors import UserError

    with pytest.raises(UserError, match="MaxJobCount=10000"):
        submit_new_run("probe", lambda _s: probe_tasks(10001), SubmitOptions(backend="slurm", name="huge", runs_dir=runs, hold=True), {})
    assert not runs.exists() or not list(runs.iterdir())  # refused before the run directory exists


def test_retries_rerun_a_crash_but_not_bad_input(slurm_cluster, tmp_path):
    counter = tmp_path / "count"
    flaky = [Task(index=0, argv=["task", "probe", "--exit", "3", "--fail-first", "2", "--counter", str(counter)])]
    run = submit_probe(tmp_path / "r1", "slurm", flaky, name="flaky", retries=2)
    rows = wait_rows(run, settled, timeout=90)
    assert rows[0].state == "completed" and counter.read_text() == "3"
    assert [h["exit_code"] for h in rows[0].history] == [3, 3]
    status = run_sbt("status", run.path)
    assert "2 failed tries" in status.stdout and "exit 3" in status.stdout
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"not a root file")
    broken = [Task(index=0, argv=["convert", str(bad), "-o", str(tmp_path / "o.h5"), "--workers", "1"])]
    run = submit_probe(tmp_path / "r2", "slurm", broken, name="badinput", retries=2)
    rows = wait_rows(run, settled, timeout=90)
    assert rows[0].state == "failed" and rows[0].exit_code == 1
    assert len(rows[0].history) == 1 and "bad.root" in rows[0].history[0]["cause"]  # one try: bad input is not retried


def test_kill_9_of_the_wrapper_ends_its_children_and_shows_lost(slurm_cluster, tmp_path):
    run = submit_probe(tmp_path / "runs", "slurm", [Task(index=0, argv=["task", "probe", "--spawn", "--sleep", "300"])], name="kill9")
    _wait_output(run, 0)
    info = probe_output(run, 0)
    wrapper = run.read_state(0)["pid"]
    os.kill(wrapper, signal.SIGKILL)
    t0 = time.monotonic()
    rows = wait_rows(run, lambda rows: rows[0].state in ("lost", "failed"), timeout=15)
    assert time.monotonic() - t0 < 10, rows
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in (info["pid"], info["child"])):
        time.sleep(0.2)
    assert not alive(info["pid"]) and not alive(info["child"])


def test_exit_75_is_requeued_and_resumes(requeue_run):
    rows = wait_rows(requeue_run, lambda rows: rows[0].state in ("completed", "failed", "lost", "killed"), timeout=300, interval=2)
    assert rows[0].state == "completed", rows[0]
    assert [h["exit_code"] for h in rows[0].history] == [75]
    lines = [json.loads(line) for line in (requeue_run.task_dir(0) / "stdout").read_text().splitlines()]
    assert [line["args"] for line in lines] == [["first"], ["resumed"]]


def _wait_output(run: Run, index: int, timeout: float = 90) -> None:
    """Wait until task ``index``'s probe printed its line (it is running, its signal handlers are set)."""
    path = run.task_dir(index) / "stdout"
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"task {index} printed nothing in {timeout} s"
        time.sleep(0.2)
