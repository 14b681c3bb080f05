"""HTCondor parallel universe (`submit train --backend condor --nodes N`): the rendered submit file, the
node wrapper's pieces, and real 2-node jobs on the test pool (scripts/condor-pool.sh: two 1-CPU slots
and a dedicated scheduler) whose node wrappers coordinate through condor_chirp and Horovod's real
rendezvous server. The pool has no TensorFlow, so its ranks run `sbt-batch task rank-probe` (each rank
records its HOROVOD_* environment after a round trip through the rendezvous server) instead of training;
tests/test_horovod.py trains for real with two node wrappers on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batchtest import settled, states, submit_probe, wait_rows
from conftest import assert_one_line_error, require, run_sbt

from sbt_batch.batch.run import Run, Task

TIMEOUT = 120
POOL_SITE = Path("opt/sbt-batch/lib/python3.13/site-packages")


def _parallel_run(tmp_path: Path, **settings) -> Run:
    tasks = [Task(index=0, argv=["train", "--out", str(tmp_path / "out")])]
    settings.setdefault("sbt_command", ["/opt/sbt-batch/bin/sbt-batch"])
    settings.setdefault("condor", {"spool": False})
    run = Run.create(tmp_path / "runs", "par", "train", "condor", tasks,
                     resources={"cpus": 2, "gpus": 1, "nodes": 2, "ntasks": 4}, **settings)
    run.begin_submission([0])
    return run


def test_parallel_submit_file_parses_as_one_job_with_two_nodes(tmp_path):
    htcondor2 = pytest.importorskip("htcondor2")
    from sbt_batch.batch.backends.condor import CondorBackend

    text = CondorBackend().render(_parallel_run(tmp_path), [0])
    lines = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in text.splitlines() if "=" in line and not line.startswith("#"))}
    assert lines["universe"] == "parallel" and lines["machine_count"] == "2" and lines["+WantIOProxy"] == "true"
    assert lines["request_cpus"] == "2" and lines["request_gpus"] == "1"
    assert "task condor-node" in lines["arguments"] and lines["output"].endswith(".node$(Node).out")
    sub = htcondor2.Submit(text)
    assert sub["machine_count"] == "2" and "condor-node" in sub["arguments"]


def test_parallel_refuses_spool_mode_and_container_universe(tmp_path, gfex_dir):
    from sbt_batch.batch.backends.condor import CondorBackend
    from sbt_batch.common.errors import UserError

    with pytest.raises(UserError, match="shared-filesystem mode"):
        CondorBackend().render(_parallel_run(tmp_path / "a", condor={"spool": True}), [0])
    with pytest.raises(UserError, match="image_style: singularity"):
        CondorBackend().render(_parallel_run(tmp_path / "b", image="docker://busybox:1"), [0])
    ok = CondorBackend().render(_parallel_run(tmp_path / "c", image="docker://busybox:1",
                                              condor={"spool": False, "image_style": "singularity"}), [0])
    assert "+SingularityImage" in ok and "universe                = parallel" in ok
    # through the CLI: one line before any run directory exists
    site = tmp_path / "spool.yaml"
    site.write_text("backend: condor\ncondor: {spool: true}\n")
    r = run_sbt("submit", "train", "--site", site, "--nodes", "2", "--runs-dir", tmp_path / "runs-cli", "--",
                "--signal", gfex_dir / "*ZvvHbb*.hdf5", "--background", gfex_dir / "*JZ0W*.hdf5", "--out", tmp_path / "o")
    assert_one_line_error(r, "--nodes 2", "shared-filesystem mode")
    assert not (tmp_path / "runs-cli").exists()


def test_node_wrapper_pieces(tmp_path):
    from sbt_batch.batch.backends.condor_parallel import FileExchange, generation, node_position, rank_environment
    from sbt_batch.common.errors import UserError
    from sbt_batch.common.launchenv import launch_info

    assert node_position({"_CONDOR_PROCNO": "1", "_CONDOR_NPROCS": "2"}) == (1, 2)
    with pytest.raises(UserError, match="parallel-universe job"):
        node_position({})
    labels = ["a-node0", "a-node1"]
    env = rank_environment({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}, node=1, nodes=2, per_node=2, local=1, labels=labels,
                           addr="10.0.0.1", port=1234, iface="ib0", cpus=8)
    assert (env["HOROVOD_RANK"], env["HOROVOD_SIZE"], env["HOROVOD_LOCAL_RANK"], env["HOROVOD_CROSS_RANK"]) == ("3", "4", "1", "1")
    assert env["HOROVOD_HOSTNAME"] == "a-node1" and env["HOROVOD_GLOO_IFACE"] == "ib0" and env["HOROVOD_CONTROLLER"] == "gloo"
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-b" and env["OMP_NUM_THREADS"] == "4"
    info = launch_info(env)
    assert (info.rank, info.size, info.local_rank, info.launcher) == (3, 4, 1, "condor parallel (gloo)")
    ad = tmp_path / "job.ad"
    ad.write_text('ClusterId = 5\nProcId = 0\nJobCurrentStartDate = 1795718597\n')
    assert generation({"_CONDOR_JOB_AD": str(ad)}) == "5_0_1795718597"
    board = FileExchange(tmp_path / "x")
    assert board.get("rendezvous") is None
    board.put("rendezvous", "127.0.0.1:5")
    assert board.get("rendezvous") == "127.0.0.1:5"


# ---- a real pool ----------------------------------------------------------------------------------


@pytest.fixture
def parallel_pool(condor_pool):
    """The pool, with Horovod's runner in its venv (copied by condor-pool.sh from the checkout's Horovod)."""
    condor_pool.require_shared_filesystem()
    runner = condor_pool.base / "root" / POOL_SITE / "horovod" / "runner" / "http" / "http_server.py"
    require(runner.is_file(), "the pool has no horovod.runner (build Horovod: bash scripts/build-horovod.sh, "
                              "then scripts/condor-pool.sh start)")
    return condor_pool


def _submit(pool, name: str, *probe: str) -> tuple[Run, Path]:
    work = pool.workdir(name)
    out = work / "ranks"
    tasks = [Task(index=0, argv=["task", "rank-probe", str(out), *probe])]
    run = submit_probe(work / "runs", "condor", tasks, name=name, site=str(pool.profile(work)), nodes=2, ntasks=2)
    return run, out


def _job_ended(run: Run):
    """A wait_rows predicate: the tasks settled and the job itself ended (rank 0 records its state before
    node 0 has collected the other nodes' exit codes)."""
    from sbt_batch.batch.backends.condor import read_event_log

    def done(rows) -> bool:
        job = read_event_log(run.path / "logs" / "condor-1.log").get(rows[0].job_id or "")
        return settled(rows) and job is not None and not job.active

    return done


def _node_log(run: Run, node: int) -> str:
    return (run.path / "logs" / f"condor-1-0.node{node}.err").read_text()


@pytest.mark.condor
@pytest.mark.slow
def test_two_node_parallel_job_agrees_on_ranks_and_rendezvous(parallel_pool):
    run, out = _submit(parallel_pool, "par-ok")
    rows = wait_rows(run, _job_ended(run), timeout=TIMEOUT)
    assert states(rows) == ["completed"], rows
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(p["HOROVOD_RANK"], p["HOROVOD_SIZE"], p["HOROVOD_CROSS_RANK"], p["node"]) for p in ranks] == [
        ("0", "2", "0", "0"), ("1", "2", "1", "1")]
    assert len({(p["HOROVOD_GLOO_RENDEZVOUS_ADDR"], p["HOROVOD_GLOO_RENDEZVOUS_PORT"]) for p in ranks}) == 1
    assert all(p["seen"] == [0, 1] for p in ranks)  # both reached the same rendezvous server
    assert ranks[0]["HOROVOD_HOSTNAME"] != ranks[1]["HOROVOD_HOSTNAME"]
    state = run.read_state(0)
    assert state["state"] == "completed" and state["job_id"] == rows[0].job_id
    assert 'node exit codes: {"node0": 0, "node1": 0}' in _node_log(run, 0)
    assert "exchange: condor_chirp" in _node_log(run, 1)  # through the job ad, not files
    events = (run.path / "logs" / "condor-1.log").read_text()
    assert "Setting job attribute SbtBatchNode_" in events and "_exit1 to \"0\"" in events
    script = (run.path / "scripts" / "condor-1.sub").read_text()
    assert "universe                = parallel" in script and "machine_count           = 2" in script


@pytest.mark.condor
@pytest.mark.slow
def test_failing_node_fails_the_job_with_its_exit_code(parallel_pool):
    run, out = _submit(parallel_pool, "par-fail", "--fail-rank", "1", "--exit", "7")
    rows = wait_rows(run, _job_ended(run), timeout=TIMEOUT)
    assert (rows[0].state, rows[0].exit_code) == ("failed", 7), rows
    assert run.read_state(0)["failed_node"] == 1
    assert "error: node 1 exited with 7" in _node_log(run, 0)
    status = json.loads(run_sbt("status", run.path, "--json").stdout)
    assert (status["tasks"][0]["state"], status["tasks"][0]["exit_code"]) == ("failed", 7)


@pytest.mark.condor
@pytest.mark.slow
def test_cancel_sends_sigterm_to_the_ranks_of_every_node(parallel_pool):
    run, out = _submit(parallel_pool, "par-term", "--sleep", "300")
    wait_rows(run, lambda r: (out / "rank-0.json").exists() and (out / "rank-1.json").exists(), timeout=TIMEOUT)
    cancelled = run_sbt("cancel", run.path)
    assert cancelled.returncode == 0 and "cancelled 1 task" in cancelled.stdout, cancelled.stderr
    rows = wait_rows(run, _job_ended(run), timeout=TIMEOUT)
    assert rows[0].state in {"cancelled", "killed"}, rows
    assert (out / "rank-0.sigterm").is_file() and (out / "rank-1.sigterm").is_file()  # both ranks checkpointed
