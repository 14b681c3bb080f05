"""The condor backend against a real HTCondor pool (scripts/condor-pool.sh): conversion arrays in
shared-filesystem and spool mode, failures with exit codes, resubmit, cancel, an unreachable schedd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from batchtest import assert_same_hdf5, probe_output, probe_tasks, settled, states, submit_probe, wait_rows
from conftest import assert_one_line_error, run_sbt

from sbt_batch.batch.run import Run

pytestmark = [pytest.mark.condor, pytest.mark.slow]

NASTY = "we ird; $(touch PWNED) 'q' \"d\" `x` #h"
TIMEOUT = 180  # seconds for a small array on 2 slots of a loaded machine


@pytest.fixture(scope="module")
def ntuples(condor_pool) -> dict[str, Path]:
    """Three sample ntuples in the shared folder and the direct (non-batch) conversion of them."""
    folder = condor_pool.workdir("nt")
    result = run_sbt("sample-ntuples", folder / "in", "--kind", "background", "--files", "3", "--events", "20", "--seed", "7")
    assert result.returncode == 0, result.stderr
    direct = run_sbt("convert", folder / "in", "-o", folder / "direct.h5", "--workers", "1")
    assert direct.returncode == 0, direct.stderr
    return {"dir": folder / "in", "direct": folder / "direct.h5"}


def _only_run(runs: Path) -> Run:
    (path,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return Run.open(path)


def _submit_convert(work: Path, inputs: Path, site: Path, name: str) -> Run:
    runs = work / "runs"
    result = run_sbt("submit", "convert", inputs, "-o", work / "out", "-k", "2", "--runs-dir", runs, "--name", name, "--site", site)
    assert result.returncode == 0, result.stderr
    assert "submitted 2 task(s) to condor" in result.stdout  # 3 inputs, 2 per task
    return _only_run(runs)


def _collect_and_compare(run: Run, work: Path, direct: Path) -> None:
    status = run_sbt("status", run.path)
    assert status.returncode == 0, status.stderr
    assert "2 tasks: 2 completed" in " ".join(status.stdout.split())
    as_json = json.loads(run_sbt("status", run.path, "--json").stdout)
    assert as_json["state"] == "completed"
    assert all(t["host"] and t["exit_code"] == 0 and "." in t["job_id"] for t in as_json["tasks"])
    collected = run_sbt("collect", run.path)
    assert collected.returncode == 0, collected.stderr
    assert_same_hdf5(work / "out" / "merged.h5", direct)


def test_convert_array_shared_filesystem_matches_direct(condor_pool, ntuples):
    condor_pool.require_shared_filesystem()
    work = condor_pool.workdir("shared")
    run = _submit_convert(work, ntuples["dir"], condor_pool.profile(work), NASTY)
    assert run.name == NASTY
    sub = run.submissions[-1]
    assert sub["backend"]["mode"] == "shared" and len({j.split(".")[0] for j in sub["job_ids"].values()}) == 1  # one cluster
    script = (run.path / "scripts" / "condor-1.sub").read_text()
    assert [line for line in script.splitlines() if line.startswith("queue")] == ["queue task from ("]
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 2, timeout=TIMEOUT)
    assert (run.path / "logs" / "condor-1.log").stat().st_size > 0  # the job event log the states come from
    _collect_and_compare(run, work, ntuples["direct"])
    assert not list(Path.cwd().glob("PWNED")) and not list(run.path.rglob("PWNED"))


def test_convert_array_spool_mode_matches_direct(condor_pool, ntuples, tmp_path):
    # Run directory and inputs outside the shared folder: the pool cannot see them, only file transfer works.
    work = tmp_path / "spool work"
    inputs = work / "in put"
    shutil.copytree(ntuples["dir"], inputs)
    run = _submit_convert(work, inputs, condor_pool.profile(tmp_path, spool=True), "spool run")
    assert not str(run.path).startswith(str(condor_pool.shared))
    assert run.submissions[-1]["backend"]["mode"] == "spool"
    wait_rows(run, lambda rows: states(rows) == ["completed"] * 2, timeout=TIMEOUT)
    for i in range(2):  # state files and outputs came back from the schedd
        assert run.read_state(i)["state"] == "completed"
        assert (work / "out" / "parts" / f"part-{i:05d}.h5").is_file()
    _collect_and_compare(run, work, ntuples["direct"])


@pytest.mark.parametrize("spool", [False, True], ids=["shared", "spool"])
def test_failing_task_shows_exit_code_and_arguments_arrive_unchanged(condor_pool, tmp_path, spool):
    if not spool:
        condor_pool.require_shared_filesystem()
    work = tmp_path if spool else condor_pool.workdir("fail")
    tasks = probe_tasks(2, args=[NASTY, "it's", "", "a\tb"])
    tasks[1].argv[tasks[1].argv.index("--exit") + 1] = "3"
    run = submit_probe(work / "runs", "condor", tasks, name=NASTY, site=str(condor_pool.profile(work, spool=spool)))
    rows = wait_rows(run, settled, timeout=TIMEOUT)
    assert states(rows) == ["completed", "failed"]
    assert rows[1].exit_code == 3
    assert probe_output(run, 0)["args"] == [NASTY, "it's", "", "a\tb", "0"]
    status = run_sbt("status", run.path, "--json")
    failed = json.loads(status.stdout)["tasks"][1]
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    collected = run_sbt("collect", run.path)
    assert collected.returncode != 0 and "task 1" in collected.stderr


def test_resubmit_cancel_and_unreachable_schedd(condor_pool, tmp_path):
    condor_pool.require_shared_filesystem()
    work = condor_pool.workdir("cancel")
    done = work / "done"
    tasks = probe_tasks(3, sleep=300, done_if=done)
    tasks[0].argv[tasks[0].argv.index("--sleep") + 1] = "0"
    tasks[1].argv[tasks[1].argv.index("--sleep") + 1] = "0"
    tasks[1].argv[tasks[1].argv.index("--exit") + 1] = "5"
    fixed = work / "fixed"  # task 1 fails with exit 5 until this file exists
    tasks[1].argv[tasks[1].argv.index("--done-if") + 1] = str(fixed)
    run = submit_probe(work / "runs", "condor", tasks, name="cancel", site=str(condor_pool.profile(work)))
    rows = wait_rows(run, lambda r: states(r)[:2] == ["completed", "failed"] and r[2].state == "running", timeout=TIMEOUT)
    assert rows[1].exit_code == 5

    # the schedd unreachable: one line, nothing changed in the run; works again once it is back
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "condor_config").write_text(f"COLLECTOR_HOST = 127.0.0.1:9\nENABLE_IPV6 = FALSE\nSPOOL = {dead}\nLOG = {dead}\n")
    before = (run.path / "manifest.json").read_text()
    down = run_sbt("status", run.path, env={"CONDOR_CONFIG": str(dead / "condor_config")})
    assert_one_line_error(down, "condor: cannot reach the schedd")
    assert (run.path / "manifest.json").read_text() == before
    assert run_sbt("status", run.path).returncode == 0

    # resubmit the failed task: it now passes, and the completed task is not re-run
    first = run.read_state(0)
    fixed.write_text("")
    again = run_sbt("resubmit", run.path, "--failed")
    assert again.returncode == 0 and "resubmitted 1 task" in again.stdout, again.stderr
    run = Run.open(run.path)
    assert len({s["backend"]["cluster"] for s in run.submissions}) == 2
    # "missing" can be transient right after a resubmit (the job neither in the log nor the queue yet)
    rows = wait_rows(run, lambda r: r[1].attempt == 2 and not r[1].active and r[1].state != "missing", timeout=TIMEOUT)
    assert (rows[1].state, rows[1].exit_code, rows[1].attempt) == ("completed", 0, 2)
    assert (run.task_dir(1) / "attempt-1" / "state.json").is_file()
    assert run.read_state(0) == first

    # cancel stops the running task through the bindings
    cancelled = run_sbt("cancel", run.path)
    assert cancelled.returncode == 0 and "cancelled 1 task" in cancelled.stdout, cancelled.stderr
    rows = wait_rows(run, settled, timeout=TIMEOUT)
    assert rows[2].state in {"cancelled", "killed"}
    assert run_sbt("cancel", run.path).stdout.strip() == "nothing to cancel"
    listing = run_sbt("runs", "--runs-dir", work / "runs")
    assert "cancel-" in listing.stdout
