"""Horovod data-parallel training with real processes on the real gFEX data.

2 ranks on CPU through ``sbt-batch train --ranks 2`` (horovodrun --gloo) and through mpirun (MPI):
identical weights on every rank, test AUC within 0.02 of one rank, only rank 0 writes, resume
after SIGTERM on a different number of ranks, one-line errors for bad input.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, require, run_sbt

pytestmark = [pytest.mark.horovod, pytest.mark.slow]

BIN = Path(sys.executable).parent
# 1000 training, 200 validation and 800 test events (the AUC is measured on the 800 never trained on)
FAST = ["--model", "2c2m", "--seed", "1", "--split", "0.5,0.1,0.4", "--batch-size", "64", "--no-progress"]
DIGEST = re.compile(r"rank (\d+)/(\d+) weights ([0-9a-f]{16})")


def _have_horovod() -> bool:
    return importlib.util.find_spec("horovod") is not None and (BIN / "horovodrun").exists()


@pytest.fixture(scope="module")
def horovod() -> None:
    """Horovod (scripts/build-horovod.sh) and Open MPI must be installed; CI fails otherwise."""
    require(_have_horovod(), "Horovod is not installed: bash scripts/build-horovod.sh")
    require(shutil.which("mpirun") is not None, "Open MPI (mpirun) is not installed")


def _data(gfex_dir: Path) -> list[str]:
    return ["--signal", str(gfex_dir / "*ZvvHbb*.hdf5"), "--background", str(gfex_dir / "*JZ0W*.hdf5")]


def _env(**extra: str) -> dict[str, str]:
    from sbt_batch.cnn.launch import rank_env

    return {**rank_env(2), "SBT_BATCH_LOG": "INFO", **extra}


def _digests(text: str) -> dict[int, str]:
    found = {int(m.group(1)): m.group(3) for m in DIGEST.finditer(text)}
    return found


def _auc(run: Path) -> float:
    from sbt_batch.cnn.evaluate import evaluate_run

    return float(evaluate_run(run, plots=False)["auc"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, gfex_dir: Path, horovod: None) -> dict[str, object]:
    """One 1-rank and one 2-rank (gloo) training of the same model on the same split."""
    base = tmp_path_factory.mktemp("hvd")
    one = run_sbt("train", *_data(gfex_dir), *FAST, "--epochs", "6", "--out", base / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_sbt("train", *_data(gfex_dir), *FAST, "--epochs", "6", "--out", base / "gloo", "--ranks", "2",
                  "--launcher", "gloo", env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    return {"one": base / "one", "gloo": base / "gloo", "gloo_log": two.stdout + two.stderr}


def test_gloo_two_ranks_identical_weights(runs: dict[str, object]) -> None:
    digests = _digests(str(runs["gloo_log"]))
    assert sorted(digests) == [0, 1], runs["gloo_log"]
    assert digests[0] == digests[1]
    history = json.loads((Path(str(runs["gloo"])) / "history.json").read_text())
    assert len(history) == 6 and history[-1]["lr"] == pytest.approx(2e-3)  # lr x2 after the 1-epoch warm-up


def test_gloo_two_ranks_auc_matches_one_rank(runs: dict[str, object]) -> None:
    auc1, auc2 = _auc(Path(str(runs["one"]))), _auc(Path(str(runs["gloo"])))
    print(f"test AUC: 1 rank {auc1:.4f}, 2 ranks (gloo) {auc2:.4f}")
    assert auc1 > 0.8, auc1
    assert abs(auc2 - auc1) <= 0.02, (auc1, auc2)


def test_mpi_two_ranks_only_rank0_writes(tmp_path: Path, gfex_dir: Path, horovod: None) -> None:
    """mpirun MPMD: rank 0 works in A/, rank 1 in B/, both with --out run; B/ must stay empty."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir(), b.mkdir()
    args = ["train", *_data(gfex_dir), *FAST, "--epochs", "2", "--max-steps", "4", "--out", "run"]
    cmd = [shutil.which("mpirun") or "mpirun", "--bind-to", "none", "--mca", "btl", "self,vader",
           "--mca", "oob_tcp_if_include", "lo",
           "-np", "1", "-wdir", str(a), sys.executable, "-m", "sbt_batch", *args, ":",
           "-np", "1", "-wdir", str(b), sys.executable, "-m", "sbt_batch", *args]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    digests = _digests(r.stdout + r.stderr)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1], r.stderr[-3000:]
    assert list(b.iterdir()) == []
    written = {str(p.relative_to(a / "run")) for p in (a / "run").rglob("*") if p.is_file()}
    assert {"model.keras", "history.json", "config.yaml", "split.npz", "checkpoints/epoch-0002.npz"} <= written
    assert not [name for name in written if ".tmp" in name or name.startswith(".")], written


def test_resume_after_sigterm_on_fewer_ranks(tmp_path: Path, gfex_dir: Path, horovod: None) -> None:
    """2 ranks get SIGTERM (through the --ranks launcher) -> checkpoint, exit 75; resume on 1 rank finishes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sbt_batch", "train", *_data(gfex_dir), *FAST, "--epochs", "200", "--max-steps", "3",
           "--out", str(out), "--ranks", "2", "--launcher", "mpi"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("checkpoints/epoch-0002*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "--resume" in err.splitlines()[-1]
    done = len(json.loads((out / "history.json").read_text()))
    assert 2 <= done < 200
    r = run_sbt("train", "--resume", out, "--epochs", str(done + 1), "--ranks", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, done + 2))
    assert (out / "model.keras").exists()


def test_ranks_without_horovod(tmp_path: Path, gfex_dir: Path) -> None:
    """A Python where `import horovod` fails (a shadowing package) gets the install hint."""
    shim = tmp_path / "shim" / "horovod"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named horovod')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shim.parent), str(REPO)])}
    r = run_sbt("train", *_data(gfex_dir), "--out", tmp_path / "run", "--ranks", "2", env=env)
    assert_one_line_error(r, "--ranks", "Horovod is not installed", "bash scripts/build-horovod.sh")
    assert not (tmp_path / "run").exists()


def test_more_ranks_than_shards(tmp_path: Path, gfex_dir: Path, horovod: None) -> None:
    r = run_sbt("train", *_data(gfex_dir), "--max-events", "100", "--out", tmp_path / "run", "--ranks", "8")
    assert_one_line_error(r, "--ranks 8", "more ranks than data shards")
    assert not (tmp_path / "run").exists()


def test_bad_launcher_and_rank_count(tmp_path: Path, gfex_dir: Path) -> None:
    r = run_sbt("train", *_data(gfex_dir), "--out", tmp_path / "run", "--ranks", "2", "--launcher", "ssh")
    assert_one_line_error(r, "--launcher", "unknown launcher 'ssh'")
    r = run_sbt("train", *_data(gfex_dir), "--out", tmp_path / "run", "--ranks", "0")
    assert_one_line_error(r, "--ranks", "at least 1")


@pytest.mark.slurm
def test_slurm_submit_train_two_ranks_via_srun(tmp_path: Path, gfex_dir: Path, horovod: None, slurm_cluster) -> None:
    """`submit train --backend slurm --ntasks 2` renders `srun --mpi=pmix` and both ranks train in step."""
    out = tmp_path / "run"
    env = {"SBT_BATCH_LOG": "INFO", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    r = run_sbt("submit", "train", "--backend", "slurm", "--ntasks", "2", "--runs-dir", tmp_path / "runs", "--",
                *_data(gfex_dir), *FAST, "--epochs", "2", "--max-steps", "4", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    script = "\n".join(p.read_text() for p in (run_dir / "scripts").iterdir())
    assert "srun --mpi=pmix" in script and "--ntasks=2" in script
    state_file = run_dir / "tasks" / "0" / "state.json"
    deadline = time.monotonic() + 400
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if state.get("state") in ("completed", "failed", "killed"):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".json"
                     and ("stderr" in p.name or p.name.endswith(".out")))
    assert state.get("state") == "completed", (state, logs[-3000:])
    digests = _digests(logs)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1], logs[-3000:]
    assert "2 ranks via srun --mpi=pmix" in logs.replace("\n", " ") or "srun --mpi=pmix" in logs
    assert (out / "model.keras").exists() and len(json.loads((out / "history.json").read_text())) == 2


def test_submit_train_renders_launchers(tmp_path: Path, gfex_dir: Path) -> None:
    """--dry-run: srun --mpi=pmix / mpirun for Slurm, `train --ranks` for one HTCondor machine, the parallel
    universe for several, errors otherwise."""
    base = ["submit", "train", "--runs-dir", tmp_path, "--dry-run"]
    train = ["--", *_data(gfex_dir), "--out", tmp_path / "run"]
    r = run_sbt(*base, "--backend", "slurm", "--nodes", "2", "--ntasks-per-node", "4", "--gpus-per-node", "4", *train)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --ntasks=8" in r.stdout and "#SBATCH --nodes=2" in r.stdout and "--gres=gpu:4" in r.stdout
    assert "srun --mpi=pmix" in r.stdout
    r = run_sbt(*base, "--backend", "slurm", "--ntasks", "2", "--mpi-launcher", "mpirun", *train)
    assert r.returncode == 0 and "exec mpirun --bind-to none" in r.stdout, r.stdout + r.stderr
    r = run_sbt(*base, "--backend", "condor", "--ntasks-per-node", "2", "--gpus-per-node", "2", *train)
    assert r.returncode == 0, r.stderr
    assert "request_gpus" in r.stdout and "--ranks 2 --launcher gloo" in " ".join(r.stdout.split())
    r = run_sbt(*base, "--backend", "condor", "--nodes", "2", "--ntasks-per-node", "2", "--gpus-per-node", "1", *train)
    assert r.returncode == 0, r.stderr
    sub = " ".join(r.stdout.split())
    assert "universe = parallel" in sub and "machine_count = 2" in sub and "+WantIOProxy = true" in sub
    assert "request_cpus = 2" in sub and "request_gpus = 1" in sub and "task condor-node" in sub
    assert "--ranks" not in sub  # the node wrapper starts the ranks, not train
    r = run_sbt(*base, "--backend", "condor", "--nodes", "2", "--ntasks", "3", *train)
    assert_one_line_error(r, "--ntasks 3", "same number of ranks", "--nodes 2")
    r = run_sbt(*base, "--backend", "local", "--nodes", "2", *train)
    assert_one_line_error(r, "--nodes 2", "local backend")
    r = run_sbt(*base, "--backend", "slurm", "--ntasks", "3", "--nodes", "2", "--ntasks-per-node", "2", *train)
    assert_one_line_error(r, "--ntasks 3", "--ntasks-per-node 2")


def test_condor_node_wrappers_train_two_ranks_with_gloo(tmp_path: Path, gfex_dir: Path, horovod: None) -> None:
    """Two `task condor-node` wrappers on this machine as nodes 0 and 1 of a parallel-universe job
    (_CONDOR_PROCNO/_CONDOR_NPROCS, a machine ad with HTCondor's loopback address, the shared-filesystem
    exchange): node 0 serves Horovod's rendezvous, both start a Gloo rank, and the training completes."""
    from sbt_batch.batch.run import Run, Task

    out = tmp_path / "model"
    task = Task(index=0, argv=["train", *_data(gfex_dir), *FAST, "--epochs", "2", "--max-steps", "4", "--out", str(out)])
    run = Run.create(tmp_path / "runs", "nodes", "train", "condor", [task], workdir=str(tmp_path),
                     resources={"cpus": 1, "nodes": 2, "ntasks": 2})
    ad = tmp_path / "machine.ad"
    ad.write_text('Cpus = 1\nMyAddress = "<127.0.0.1:9618?addrs=127.0.0.1-9618&noUDP>"\n')
    env = {**os.environ, "SBT_BATCH_LOG": "INFO", "_CONDOR_NPROCS": "2", "_CONDOR_MACHINE_AD": str(ad),
           "SBT_BATCH_NODE_EXCHANGE": "file", "SBT_BATCH_JOB_ID": "7.0", "SBT_BATCH_NODE_TIMEOUT": "120"}
    nodes = [subprocess.Popen([sys.executable, "-m", "sbt_batch", "task", "condor-node", str(run.path), "0"],
                              env={**env, "_CONDOR_PROCNO": str(k)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (0, 1)]
    logs = [p.communicate(timeout=400) for p in nodes]
    rank0 = (run.task_dir(0) / "stderr").read_text()
    text = rank0 + "".join(o + e for o, e in logs)
    assert [p.returncode for p in nodes] == [0, 0], text[-4000:]
    assert "2 ranks via condor parallel (gloo) (Gloo)" in rank0
    assert "rendezvous 127.0.0.1:" in logs[1][1] and "via lo; exchange: files in" in logs[1][1]
    assert 'node exit codes: {"node0": 0, "node1": 0}' in logs[0][1]
    digests = _digests(text)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1], text[-4000:]
    assert Run.open(run.path).read_state(0)["state"] == "completed"
    assert (out / "model.keras").exists() and len(json.loads((out / "history.json").read_text())) == 2


def test_rank_detection_from_launcher_environment() -> None:
    from sbt_batch.cnn.horovod import lr_scale
    from sbt_batch.common.errors import UserError
    from sbt_batch.common.launchenv import Launch, launch_info

    assert launch_info({}) is None
    assert launch_info({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}) == Launch(1, 2, 1, "horovodrun")
    assert launch_info({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}).size == 4  # type: ignore[union-attr]
    srun = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "1"}
    assert launch_info({**srun, "PMIX_RANK": "1"}) == Launch(1, 2, 1, "srun --mpi=pmix")
    with pytest.raises(UserError, match="--mpi=pmix"):
        launch_info(srun)  # srun without an MPI plugin
    assert launch_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}) is None  # the batch script itself
    assert [lr_scale(4, e, 2) for e in (0, 1, 2, 5)] == [1.0, 2.5, 4.0, 4.0]
    assert lr_scale(4, 0, 0) == 4.0 and lr_scale(4, 3, 1, "none") == 1.0
