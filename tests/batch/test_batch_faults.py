"""Issue 13 on the local backend: the submit options of the real commands, retries, kill -9 of a task wrapper,
damaged outputs (collect + resubmit --invalid) and damaged run files (one line, `runs` keeps listing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from batchtest import alive, probe_output, sample_ntuples, settled, states, submit_probe, submitted_run, wait_rows
from conftest import assert_one_line_error, run_sbt

from sbt_batch.batch.run import Task
from sbt_batch.common.errors import EXIT_INCOMPLETE


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory) -> Path:
    """Three sample ntuples of 30 events each (real ROOT files)."""
    return sample_ntuples(tmp_path_factory.mktemp("nt"), "signal", 3, 30, "--seed", "11")



# ---- one command line, locally or as a batch job ------------------------------------------------------------------


def test_submit_convert_takes_the_convert_options(tmp_path, ntuples):
    runs = tmp_path / "runs"
    result = run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "--eta-max", "2.7", "--step-size", "50MB",
                     "--runs-dir", runs, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "--eta-max 2.7 --step-size 50MB" in result.stdout and not runs.exists()
    helped = run_sbt("submit", "convert", "--help")
    assert "--eta-max" in helped.stdout and "--step-size" in helped.stdout and "Options of sbt-batch convert" in helped.stdout


@pytest.mark.parametrize("args, needle", [
    (["--eta-max", "wide"], "--eta-max"),
    (["--workers", "two"], "--workers"),
    (["--no-such-option"], "--no-such-option"),
])
def test_submit_convert_bad_option_is_one_line_before_anything_exists(tmp_path, ntuples, args, needle):
    runs = tmp_path / "runs"
    result = run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", *args, "--runs-dir", runs)
    assert_one_line_error(result, needle)
    assert not runs.exists() and not (tmp_path / "out").exists()


def test_submit_train_evaluate_tabular_take_and_check_their_options(tmp_path):
    runs = tmp_path / "runs"
    ok = run_sbt("submit", "train", "--signal", "s.h5", "--background", "b.h5", "--epochs", "3", "--rgb", "--dry-run", "--runs-dir", runs)
    assert ok.returncode == 0 and "sbt-batch train --signal s.h5 --background b.h5 --epochs 3 --rgb" in ok.stdout, ok.stderr
    legacy = run_sbt("submit", "train", "--backend", "slurm", "--dry-run", "--runs-dir", runs, "--", "--config", "jobs/train-gfex.yaml")
    assert legacy.returncode == 0 and "sbt-batch train --config jobs/train-gfex.yaml" in legacy.stdout, legacy.stderr
    assert_one_line_error(run_sbt("submit", "train", "--epochs", "many", "--runs-dir", runs), "--epochs")
    assert_one_line_error(run_sbt("submit", "train", "--runs-dir", runs, "--", "--frobnicate"), "--frobnicate")
    ev = run_sbt("submit", "evaluate", "models/cnn", "--out", "ev", "--dry-run", "--runs-dir", runs)
    assert ev.returncode == 0 and "sbt-batch evaluate models/cnn --out ev" in ev.stdout, ev.stderr
    assert_one_line_error(run_sbt("submit", "evaluate", "--runs-dir", runs), "Missing argument")
    tab = run_sbt("submit", "train-tabular", "-o", tmp_path / "kin", "--repeats", "2", "--epochs", "4", "--dry-run", "--runs-dir", runs)
    assert tab.returncode == 0 and "train-tabular --epochs 4 --out" in tab.stdout, tab.stderr
    assert_one_line_error(run_sbt("submit", "train-tabular", "-o", tmp_path / "kin", "--lr", "fast", "--runs-dir", runs), "--lr")
    assert not runs.exists()


def test_submit_help_loads_no_tensorflow(tmp_path):
    """`submit X --help` builds X's options without importing TensorFlow (its time is in benchmarks/submit.py)."""
    code = ("import sys, time; t=time.perf_counter(); from sbt_batch.cli import main\n"
            "try:\n    main(['submit', 'train', '--help'])\nexcept SystemExit: pass\n"
            "print(time.perf_counter()-t, 'tensorflow' in sys.modules, file=sys.stderr)")
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds, tf = result.stderr.strip().splitlines()[-1].split()
    assert tf == "False" and float(seconds) > 0, result.stderr


# ---- retries ---------------------------------------------------------------------------------------------------------


def test_local_retries_and_resume_after_exit_75(tmp_path):
    counter = tmp_path / "count"
    flaky = Task(index=0, argv=["task", "probe", "--exit", "3", "--fail-first", "1", "--counter", str(counter)])
    ckpt = Task(index=1, argv=["task", "probe", "--sleep", "120", "--checkpoint-on-term", "--", "first"],
                meta={"resume_argv": ["task", "probe", "--", "resumed"]})
    run = submit_probe(tmp_path / "runs", "local", [flaky, ckpt], name="retry", retries=1, max_running=2)
    wait_rows(run, lambda rows: rows[1].state == "running", timeout=60)
    deadline = time.monotonic() + 20
    while not (run.task_dir(1) / "stdout").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(probe_output(run, 1)["pid"], signal.SIGTERM)  # the command checkpoints and exits 75
    rows = wait_rows(run, settled, timeout=60)
    assert states(rows) == ["completed", "completed"]
    assert [h["exit_code"] for h in rows[0].history] == [3] and [h["exit_code"] for h in rows[1].history] == [75]
    assert json.loads((run.task_dir(1) / "stdout").read_text().splitlines()[-1])["args"] == ["resumed"]
    status = run_sbt("status", run.path)
    assert "1 failed try" in status.stdout and "exit 3" in status.stdout and "checkpointed" in status.stdout


# ---- tasks that die cleanly ------------------------------------------------------------------------------------------


def test_kill_9_of_a_local_wrapper_ends_its_children_and_max_running_holds(tmp_path):
    tasks = [Task(index=i, argv=["task", "probe", "--spawn", "--sleep", "300" if i == 0 else "3"]) for i in range(2)]
    run = submit_probe(tmp_path / "runs", "local", tasks, name="kill9", max_running=1)
    wait_rows(run, lambda rows: rows[0].state == "running", timeout=60)
    deadline = time.monotonic() + 20
    while not (run.task_dir(0) / "stdout").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    info = probe_output(run, 0)
    os.kill(run.read_state(0)["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    rows = wait_rows(run, lambda rows: rows[0].state == "lost", timeout=15, interval=0.2)
    assert time.monotonic() - t0 < 5
    assert "wrapper died" in rows[0].reason or "without recording" in rows[0].reason
    # task 1 may start only once task 0's command and its child are gone
    deadline = time.monotonic() + 30
    while not (run.task_dir(1) / "stdout").exists() and time.monotonic() < deadline:
        assert not (alive(info["pid"]) and (run.task_dir(1) / "state.json").exists()), "two tasks ran at once"
        time.sleep(0.05)
    assert not alive(info["pid"]) and not alive(info["child"])
    rows = wait_rows(run, lambda rows: rows[1].state == "completed", timeout=60)
    again = run_sbt("resubmit", run.path, "--failed")
    assert again.returncode == 0 and "resubmitted 1 task(s)" in again.stdout, again.stderr


# ---- damaged outputs and run files -----------------------------------------------------------------------------------


def test_collect_and_resubmit_invalid_outputs(tmp_path, ntuples):
    runs = tmp_path / "runs"
    run = submitted_run(run_sbt("submit", "convert", ntuples, "-o", tmp_path / "out", "--runs-dir", runs, "--max-running", "2"), runs)
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 3, timeout=120)
    parts = [Path(t.outputs[0]) for t in run.tasks]
    parts[0].unlink()  # deleted
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 3])  # truncated
    with h5py.File(parts[2], "a") as h5:  # wrong event count
        for name in list(h5):
            values = h5[name][()]
            del h5[name]
            h5[name] = values[:-5]
    collected = run_sbt("collect", run.path)
    assert collected.returncode == EXIT_INCOMPLETE
    assert_one_line_error(collected, "3 task output(s) failed the checks", "resubmit --invalid")
    assert "output missing" in collected.stderr and "does not open" in collected.stderr and "has 25 events" in collected.stderr
    again = run_sbt("resubmit", run.path, "--invalid")
    assert again.returncode == 0 and "resubmitted 3 task(s)" in again.stdout, again.stderr
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 3 and all(r.attempt == 2 for r in rows), timeout=120)
    final = run_sbt("collect", run.path)
    assert final.returncode == 0 and "merged 90 events" in final.stdout, final.stderr


def test_damaged_state_and_manifest_files(tmp_path):
    runs = tmp_path / "runs"
    good = submit_probe(runs, "local", [Task(index=i, argv=["task", "probe"]) for i in range(2)], name="good")
    broken = submit_probe(runs, "local", [Task(index=0, argv=["task", "probe"])], name="broken")
    wait_rows(good, settled, timeout=60)
    wait_rows(broken, settled, timeout=60)
    (good.task_dir(0) / "state.json").write_text('{"state": "compl')  # torn write
    status = run_sbt("status", good.path)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    warnings = [line for line in status.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and str(good.task_dir(0) / "state.json") in warnings[0] and "corrupt" in warnings[0]
    assert "lost" in status.stdout
    (broken.path / "manifest.json").write_text('{"name": "broken", "tasks": [')
    assert_one_line_error(run_sbt("status", broken.path), str(broken.path / "manifest.json"), "corrupt manifest")
    assert_one_line_error(run_sbt("collect", broken.path), "manifest.json")
    listed = run_sbt("runs", "--runs-dir", runs)
    assert listed.returncode == 0 and good.path.name in listed.stdout and broken.path.name not in listed.stdout, listed.stderr
    assert "Traceback" not in listed.stderr and "manifest.json" in listed.stderr and listed.stderr.startswith("warning:")
    (broken.path / "manifest.json").write_text("[1, 2]")
    assert_one_line_error(run_sbt("status", broken.path), "manifest.json", "not a JSON object")
