"""HTCondor backend checks that need no pool: the rendered submit file parsed by htcondor2.Submit,
its `queue ... from` items, quoting, a real job event log, bad profiles and an unreachable schedd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batchtest import sample_ntuples
from conftest import assert_one_line_error, run_sbt

from sbt_batch.batch.backend import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING
from sbt_batch.batch.run import Run, Task
from sbt_batch.common.errors import UserError

htcondor2 = pytest.importorskip("htcondor2")

from sbt_batch.batch.backends.condor import (
    CondorBackend,
    _state_from_ad,
    classad_string,
    harvest,
    quote_arguments,
    quote_word,
    read_event_log,
    rewrite_argv,
)

NASTY = "we ird; $(touch PWNED) 'q' \"d\" `x` #h"

# A real event log written by the test pool (scripts/condor-pool.sh): job 8.1 exited 3,
# jobs 8.0 and 8.2 were removed by `sbt-batch cancel` while running (evicted, then aborted).
EVENT_LOG = """\
000 (008.000.000) 2026-11-26 15:54:39 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=schedd_17741_6dc8>
...
000 (008.001.000) 2026-11-26 15:54:39 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=schedd_17741_6dc8>
...
000 (008.002.000) 2026-11-26 15:54:39 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=schedd_17741_6dc8>
...
001 (008.000.000) 2026-11-26 15:54:40 Job executing on host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=startd_17741_6dc8>
\tSlotName: slot1_1@vm
\tCondorScratchDir = "/var/lib/condor/execute/dir_18937"
\tCpus = 1
\tDisk = 1049600
\tGPUs = 0
\tMemory = 128
...
001 (008.001.000) 2026-11-26 15:54:40 Job executing on host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=startd_17741_6dc8>
\tSlotName: slot1_2@vm
\tCondorScratchDir = "/var/lib/condor/execute/dir_18938"
\tCpus = 1
\tDisk = 1049600
\tGPUs = 0
\tMemory = 128
...
005 (008.001.000) 2026-11-26 15:54:44 Job terminated.
\t(1) Normal termination (return value 3)
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
\t0  -  Total Bytes Sent By Job
\t0  -  Total Bytes Received By Job
\tPartitionable Resources :    Usage  Request Allocated 
\t   Cpus                 :        0        1         1 
\t   Disk (KB)            :        0  1048576   1049600 
\t   GPUs                 :                           0 
\t   Memory (MB)          :        5      128       128 
\t   TimeExecute (s)      :        4                    
\t   TimeSlotBusy (s)     :        4                    

\tJob terminated of its own accord at 2026-11-26T15:54:44Z with exit-code 3.
...
001 (008.002.000) 2026-11-26 15:54:44 Job executing on host: <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=startd_17741_6dc8>
\tSlotName: slot1_2@vm
\tCondorScratchDir = "/var/lib/condor/execute/dir_19064"
\tCpus = 1
\tDisk = 1049600
\tGPUs = 0
\tMemory = 128
...
004 (008.002.000) 2026-11-26 15:54:44 Job was evicted.
\t(0) CPU times
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
...
009 (008.002.000) 2026-11-26 15:54:44 Job was aborted.
...
004 (008.000.000) 2026-11-26 15:54:44 Job was evicted.
\t(0) CPU times
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
...
009 (008.000.000) 2026-11-26 15:54:44 Job was aborted.
...
"""


def make_run(tmp_path: Path, *, name: str = NASTY, spool: bool = False, n: int = 6, **settings) -> Run:
    """A run directory with ``n`` probe tasks whose arguments contain shell and submit-file syntax."""
    tasks = [Task(index=i, argv=["task", "probe", "--", NASTY, "it's", "a\tb", "", str(i)]) for i in range(n)]
    settings.setdefault("sbt_command", ["/opt/sbt-batch/bin/sbt-batch"])
    run = Run.create(tmp_path / "runs", name, "probe", "condor", tasks, condor={"spool": spool}, **settings)
    run.begin_submission(range(n))
    return run


def test_submit_file_parses_and_queues_one_item_per_task(tmp_path):
    run = make_run(tmp_path)
    text = CondorBackend().render(run, [0, 2, 5])
    sub = htcondor2.Submit(text)
    assert list(sub.itemdata()) == [{"task": "0"}, {"task": "2"}, {"task": "5"}]
    assert sub.getQArgs().strip().startswith("task from")
    # `$` is protected from macro expansion: the expanded value is the real path, unchanged
    assert sub.expand("initialdir") == str(run.path)
    assert sub["should_transfer_files"] == "NO"
    assert sub.expand("log") == "logs/condor-1.log"
    assert sub["executable"] == "/opt/sbt-batch/bin/sbt-batch"
    assert "SBT_BATCH_JOB_ID=$(ClusterId).$(ProcId)" in sub["environment"]
    assert "PWNED" not in "".join(line for line in text.splitlines() if line.startswith("queue"))


def test_spool_submit_file_transfers_task_folders(tmp_path):
    run = make_run(tmp_path, spool=True, name="spool run")
    sub = htcondor2.Submit(CondorBackend().render(run, [1, 3]))
    assert list(sub.itemdata()) == [{"task": "1"}, {"task": "3"}]
    assert sub["should_transfer_files"] == "YES"
    assert sub["transfer_input_files"] == "manifest.json, inputs, outputs, tasks"
    assert sub["transfer_output_files"] == "tasks, outputs"
    assert sub["initialdir"] == f"{run.path}/spool/1/$(task)"
    assert sub["arguments"] == '"task run . $(task)"'


def test_resources_image_and_accounting_group(tmp_path):
    run = make_run(
        tmp_path,
        name="res",
        image="/cvmfs/unpacked.cern.ch/sbt-batch:cpu",
        resources={"cpus": 2, "gpus": 1, "mem_mb": 4096, "time_seconds": 3600, "accounting_group": "group_atlas.trigger", "max_running": 10},
        extra_directives=['+JobFlavour = "longlunch"'],
    )
    sub = htcondor2.Submit(CondorBackend().render(run, [0]))
    assert sub["universe"] == "container"
    assert sub["container_image"] == "/cvmfs/unpacked.cern.ch/sbt-batch:cpu"
    assert (sub["request_cpus"], sub["request_gpus"], sub["request_memory"]) == ("2", "1", "4096")
    assert sub["allowed_execute_duration"] == "3600"
    assert "HoldReasonCode == 47" in sub["periodic_remove"]
    assert sub["accounting_group"] == "group_atlas.trigger"
    assert sub["max_materialize"] == "10"
    assert sub["MY.JobFlavour"] == '"longlunch"'
    run.manifest["condor"] = {"image_style": "singularity"}
    sub = htcondor2.Submit(CondorBackend().render(run, [0]))
    assert sub["MY.SingularityImage"] == '"/cvmfs/unpacked.cern.ch/sbt-batch:cpu"'
    assert sub["universe"] == "vanilla" and "container_image" not in sub


def test_bare_sbt_command_runs_through_env(tmp_path):
    run = make_run(tmp_path, name="bare", sbt_command=["sbt-batch"])
    sub = htcondor2.Submit(CondorBackend().render(run, [0]))
    assert sub["executable"] == "/usr/bin/env"
    assert sub["arguments"].startswith('"sbt-batch task run ')


def test_quoting_rules():
    assert quote_word("plain") == "plain"
    assert quote_word("a b") == "'a b'"
    assert quote_word("it's") == "'it''s'"
    assert quote_word('say "x"') == "'say \"\"x\"\"'"
    assert quote_word("") == "''"
    assert quote_arguments(["$(x)", "y"]) == '"$(DOLLAR)(x) y"'
    assert classad_string('a "b" \\ $c') == '"a \\"b\\" \\\\ $(DOLLAR)c"'
    with pytest.raises(UserError, match="newline"):
        quote_arguments(["two\nlines"])


def test_rewrite_argv_for_spool():
    mapping = {"/d/in 1.root": "inputs/0/in 1.root", "/o/part-00000.h5": "outputs/0/part-00000.h5"}
    argv = ["convert", "/d/in 1.root", "--output", "/o/part-00000.h5", "--log=/o/part-00000.h5", "/other"]
    assert rewrite_argv(argv, mapping) == ["convert", "inputs/0/in 1.root", "--output", "outputs/0/part-00000.h5", "--log=outputs/0/part-00000.h5", "/other"]


def test_harvest_moves_outputs_then_state(tmp_path):
    out = tmp_path / "out" / "parts"
    out.mkdir(parents=True)
    tasks = [Task(index=0, argv=["convert", "x", "--output", str(out / "part-00000.h5")], inputs=["x"], outputs=[str(out / "part-00000.h5")])]
    run = Run.create(tmp_path / "runs", "h", "convert", "condor", tasks)
    run.begin_submission([0])
    folder = run.path / "spool" / "1" / "0"
    (folder / "outputs" / "0").mkdir(parents=True)
    (folder / "outputs" / "0" / "part-00000.h5").write_text("data")
    (folder / "tasks" / "0").mkdir(parents=True)
    (folder / "tasks" / "0" / "state.json").write_text(json.dumps({"state": "completed", "attempt": 1, "exit_code": 0}))
    (folder / "tasks" / "0" / "stderr").write_text("log")
    harvest(run, folder, 0)
    assert (out / "part-00000.h5").read_text() == "data"
    assert run.read_state(0)["state"] == "completed"
    assert (run.task_dir(0) / "stderr").read_text() == "log"
    assert not (folder / "outputs").exists() and not (folder / "tasks").exists()


def test_event_log_of_a_real_pool(tmp_path):
    path = tmp_path / "condor-1.log"
    path.write_text(EVENT_LOG)
    states = read_event_log(path)
    assert states["8.1"].state == FAILED and states["8.1"].exit_code == 3
    assert states["8.0"].state == CANCELLED and states["8.2"].state == CANCELLED
    # reading stops where the writer is: a log cut after the executions shows them running
    cut = EVENT_LOG[: EVENT_LOG.index("005 (008.001.000)")]
    path.write_text(cut)
    partial = read_event_log(path)
    assert partial["8.0"].state == RUNNING and partial["8.1"].state == RUNNING and partial["8.2"].state == PENDING
    assert read_event_log(tmp_path / "missing.log") == {}
    (tmp_path / "garbage.log").write_bytes(b"\x00\x01 not an event log\n")
    assert read_event_log(tmp_path / "garbage.log") == {}


def test_state_from_job_ad():
    ad = lambda **kw: htcondor2.classad.ClassAd(kw)
    assert _state_from_ad(ad(JobStatus=1)).state == PENDING
    assert _state_from_ad(ad(JobStatus=2)).state == RUNNING
    assert _state_from_ad(ad(JobStatus=4, ExitCode=0)).state == COMPLETED
    failed = _state_from_ad(ad(JobStatus=4, ExitCode=3))
    assert (failed.state, failed.exit_code) == (FAILED, 3)
    assert _state_from_ad(ad(JobStatus=5, HoldReasonCode=16, HoldReason="Spooling input data files")).state == PENDING
    held = _state_from_ad(ad(JobStatus=5, HoldReasonCode=13, HoldReason="transfer failed"))
    assert (held.state, held.reason) == ("held", "transferring the inputs failed: transfer failed")  # issue 13: reasons in words
    assert _state_from_ad(ad(JobStatus=3)).state == CANCELLED


@pytest.fixture(scope="module")
def ntuple(tmp_path_factory) -> Path:
    """One small real ntuple (`sbt-batch sample-ntuples`)."""
    return next(sample_ntuples(tmp_path_factory.mktemp("nt"), "background", 1, 5).glob("*.root"))


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text("backend: condor\nsbt_command: [/opt/sbt-batch/bin/sbt-batch]\n" + text)
    return path


def test_dry_run_prints_submit_file(tmp_path, ntuple):
    result = run_sbt("submit", "convert", ntuple, "-o", tmp_path / "out", "--backend", "condor", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert "queue task from (" in result.stdout and "should_transfer_files" in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("condor: {spoool: true}", "did you mean 'spool'"),
        ("condor: {spool: maybe}", "'spool' must be true or false"),
        ("condor: {image_style: docker}", "image_style"),
    ],
)
def test_bad_condor_profile_one_line_error(tmp_path, ntuple, text, needle):
    site = _profile(tmp_path, text)
    result = run_sbt("submit", "convert", ntuple, "-o", tmp_path / "out", "--site", site, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, needle)


def test_unreachable_schedd_one_line_error_and_consistent_run(tmp_path, ntuple):
    dead = tmp_path / "dead"
    dead.mkdir()
    config = dead / "condor_config"
    config.write_text(f"CONDOR_HOST = 127.0.0.1:9\nCOLLECTOR_HOST = 127.0.0.1:9\nENABLE_IPV6 = FALSE\nSPOOL = {dead}\nLOG = {dead}\n")
    env = {"CONDOR_CONFIG": str(config)}
    runs = tmp_path / "runs"
    result = run_sbt("submit", "convert", ntuple, "-o", tmp_path / "out", "--site", _profile(tmp_path, ""), "--runs-dir", runs, "--name", "down", env=env)
    assert_one_line_error(result, "condor: cannot reach the schedd", "resubmit")
    (path,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    run = Run.open(path)
    assert run.submissions[-1]["status"] == "failed" and "cannot reach the schedd" in run.submissions[-1]["error"]
    status = run_sbt("status", path, "--json", env=env)
    assert status.returncode == 0, status.stderr  # nothing was submitted: no scheduler query needed
    assert [t["state"] for t in json.loads(status.stdout)["tasks"]] == ["unsubmitted"]
