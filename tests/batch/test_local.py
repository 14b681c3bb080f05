"""The local backend end to end: a detached process pool, real conversions, failures, cancel, resubmit, collect."""

from __future__ import annotations

import json
import shutil
import time
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

from sbt_batch.batch.core import cancel_run, run_status
from sbt_batch.batch.run import Run
from sbt_batch.common.errors import EXIT_INCOMPLETE

NASTY = "we ird; $(touch PWNED) 'q' \"d\" `x` #h"


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory) -> Path:
    """Three small sample ntuples (real ROOT files from `sbt-batch sample-ntuples`)."""
    return sample_ntuples(tmp_path_factory.mktemp("nt"), "background", 3, 30, "--seed", "4")


def test_convert_end_to_end_matches_direct(tmp_path, ntuples):
    runs = tmp_path / "runs"
    result = run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "-k", "2", "--runs-dir", runs, "--name", "e2e")
    run = submitted_run(result, runs)
    assert len(run.tasks) == 2
    # the submitting command has exited; the detached runner keeps going and status follows it
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 2, timeout=90)
    status = run_sbt("status", "e2e", "--runs-dir", runs, "--json")
    assert json.loads(status.stdout)["state"] == "completed"
    collected = run_sbt("collect", run.path)
    assert collected.returncode == 0, collected.stderr
    direct = run_sbt("convert", ntuples, "-o", tmp_path / "direct.h5", "--workers", "1")
    assert direct.returncode == 0, direct.stderr
    assert_same_hdf5(tmp_path / "out" / "merged.h5", tmp_path / "direct.h5")
    listing = run_sbt("runs", "--runs-dir", runs)
    assert "e2e-" in listing.stdout and "completed" in listing.stdout


def test_failed_task_resubmit_and_collect(tmp_path, ntuples):
    inputs = tmp_path / "in"
    shutil.copytree(ntuples, inputs)
    bad = sorted(inputs.glob("*.root"))[1]
    good_copy = tmp_path / "good.root"
    shutil.copy(bad, good_copy)
    bad.write_bytes(b"not a ROOT file")
    runs = tmp_path / "runs"
    run = submitted_run(run_sbt("submit", "convert", inputs, "-o", tmp_path / "out", "--runs-dir", runs), runs)
    rows = wait_rows(run, settled, timeout=90)
    assert states(rows) == ["completed", "failed", "completed"]
    assert rows[1].exit_code not in (0, None)
    before = run.read_state(0)
    collected = run_sbt("collect", run.path)
    assert collected.returncode == EXIT_INCOMPLETE
    assert_one_line_error(collected, "incomplete", "tasks 1")
    assert bad.name in collected.stderr  # the last stderr lines of the failed task are listed
    assert not (tmp_path / "out" / "merged.h5").exists()
    # --allow-partial merges what is there, and still says so
    partial = run_sbt("collect", run.path, "--allow-partial", "-o", tmp_path / "partial.h5")
    assert partial.returncode == EXIT_INCOMPLETE and (tmp_path / "partial.h5").exists()
    shutil.copy(good_copy, bad)
    again = run_sbt("resubmit", run.path, "--failed")
    assert again.returncode == 0 and "resubmitted 1 task" in again.stdout, again.stderr
    rows = wait_rows(run, lambda r: states(r) == ["completed"] * 3, timeout=90)
    assert [r.attempt for r in rows] == [1, 2, 1]
    assert run.read_state(0) == before  # never re-run a completed task
    assert (run.task_dir(1) / "attempt-1" / "state.json").exists()
    assert run_sbt("resubmit", run.path).stdout.startswith("nothing to resubmit")
    assert run_sbt("collect", run.path).returncode == 0
    assert run_sbt("convert", inputs, "-o", tmp_path / "direct.h5", "--workers", "1").returncode == 0
    assert_same_hdf5(tmp_path / "out" / "merged.h5", tmp_path / "direct.h5")


def test_cancel_then_resubmit(tmp_path):
    marker = tmp_path / "go"
    run = submit_probe(tmp_path / "runs", "local", probe_tasks(3, sleep=120, done_if=marker), max_running=1)
    wait_rows(run, lambda rows: rows[0].state == "running", timeout=30)
    result = run_sbt("cancel", run.path)
    assert result.returncode == 0 and "cancelled 3 task" in result.stdout, result.stderr
    rows = wait_rows(run, settled, timeout=30)
    assert states(rows)[0] in {"killed", "cancelled"} and states(rows)[1:] == ["cancelled", "cancelled"]
    marker.touch()
    assert run_sbt("resubmit", run.path, "--failed").returncode == 0
    rows = wait_rows(run, lambda r: states(r) == ["completed"] * 3, timeout=60)
    assert [r.attempt for r in rows] == [2, 2, 2]


def test_special_characters_arrive_unchanged(tmp_path):
    runs = tmp_path / NASTY / "runs"
    run = submit_probe(runs, "local", probe_tasks(2, args=[NASTY, "a;b", "$(id)"]), name=NASTY)
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 2, timeout=60)
    assert probe_output(run, 1)["args"] == [NASTY, "a;b", "$(id)", "1"]
    assert run.path.parent == runs.absolute() and run.name == NASTY
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    status = run_sbt("status", run.path)
    assert status.returncode == 0


def test_kill_while_writing_leaves_no_partial_output(tmp_path):
    nt = sample_ntuples(tmp_path / "nt", "background", 1, 5000)
    runs = tmp_path / "runs"
    run = submitted_run(run_sbt("submit", "convert", nt, "-o", tmp_path / "out", "--runs-dir", runs, "--convert-args", "--step-size 100"), runs)
    parts = tmp_path / "out" / "parts"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".part-00000.h5") for p in parts.iterdir()):  # the temp file being written
        state = run.read_state(0) or {}
        assert state.get("state") in (None, "running"), f"task ended before it could be killed: {state}"
        assert time.monotonic() < deadline, "the conversion never started writing"
        time.sleep(0.05)
    assert cancel_run(Run.open(run.path)) == [0]  # in-process, so the kill lands while the file is being written
    rows = wait_rows(run, settled, timeout=30)
    assert states(rows) in (["killed"], ["cancelled"])
    assert not (parts / "part-00000.h5").exists()
    assert run_sbt("collect", run.path).returncode == EXIT_INCOMPLETE
    assert run_sbt("resubmit", run.path).returncode == 0
    wait_rows(run, lambda r: states(r) == ["completed"], timeout=120)
    assert run_sbt("collect", run.path).returncode == 0
    assert run.read_state(0)["attempt"] == 2


def test_local_image_without_runtime_is_one_line_error(tmp_path, ntuples, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    import sys

    result = run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "--runs-dir", tmp_path / "runs", "--image", "img.sif",
                     env={"PATH": str(Path(sys.executable).parent)})
    assert_one_line_error(result, "--image", "apptainer or podman")


def test_after_waits_for_the_other_run(tmp_path):
    first = submit_probe(tmp_path / "runs", "local", probe_tasks(1, sleep=2), name="first")
    second = submit_probe(tmp_path / "runs", "local", probe_tasks(1), name="second", after=str(first.path))
    assert states(run_status(Run.open(second.path))) == ["pending"]
    wait_rows(second, lambda rows: states(rows) == ["completed"], timeout=60)
    assert Run.open(first.path).read_state(0)["finished"] <= second.read_state(0)["started"]


@pytest.mark.container
def test_local_image_runs_tasks_in_podman(tmp_path, ntuples):
    """`--image` on the local backend: the tasks run inside the project's image (podman), same merged output."""
    import os
    import subprocess

    from sbt_batch import __version__

    repo = Path(__file__).resolve().parents[2]
    env_text = subprocess.run(["bash", str(repo / "scripts" / "build-image.sh"), "env"], capture_output=True, text=True).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_text.splitlines() if line.startswith("export "))
    image = f"localhost/sbt-batch:{__version__}-cpu"
    have = shutil.which("podman") and subprocess.run(["podman", "image", "exists", image], env={**os.environ, **env},
                                                       capture_output=True).returncode == 0
    from conftest import require

    require(bool(have), f"container image {image} not built (scripts/build-image.sh)")
    runs = tmp_path / "runs"
    result = run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "-k", "2", "--runs-dir", runs, "--image", image, env=env)
    run = submitted_run(result, runs)
    rows = wait_rows(run, settled, timeout=180)
    assert states(rows) == ["completed"] * 2, [(r.state, r.reason) for r in rows]
    assert rows[0].host != os.uname().nodename  # ran in a container
    assert run_sbt("collect", run.path).returncode == 0
    assert run_sbt("convert", ntuples, "-o", tmp_path / "direct.h5", "--workers", "1").returncode == 0
    assert_same_hdf5(tmp_path / "out" / "merged.h5", tmp_path / "direct.h5")
