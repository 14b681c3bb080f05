"""Golden files: the Slurm script and the HTCondor submit description of one fixed, representative run.

A change to a template, to the quoting or to what a backend puts in its script shows up here as a diff
of a file a reviewer can read (as submitit's ``_sbatch_test_record.txt`` does). The run is built in
memory with fixed values: no clock, no host, no temporary path reaches the output. After an intended
change, rewrite the files and review their diff::

    SBT_BATCH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/batch/test_golden.py
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sbt_batch.batch.backends.condor import CondorBackend
from sbt_batch.batch.backends.slurm import SlurmBackend
from sbt_batch.batch.run import Run, Task

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("SBT_BATCH_UPDATE_GOLDEN", "") not in ("", "0")
# A run directory that needs quoting everywhere: a space and a single quote (never created: rendering reads no files).
RUN_DIR = Path("/scratch/o'brien/sbt runs/golden demo-20250101T000000Z")
SBT_COMMAND = ["/opt/sbt batch/bin/python", "-m", "sbt_batch"]


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from this machine: the package's templates and defaults, no X.509 proxy."""
    monkeypatch.delenv("SBT_BATCH_TEMPLATES", raising=False)
    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user defaults.yaml
    monkeypatch.setattr("sbt_batch.batch.proxy.find_proxy", lambda: None)


def golden_run(backend: str, indices: list[int], **settings: Any) -> Run:
    """A run of ``backend`` with tasks ``indices`` (a convert-like argv), as ``submit`` would build it, not on disk."""
    tasks = [Task(index=i, argv=["convert", f"/data/in {i}.root", "--output", f"/data/out/part-{i:05d}.h5"])
             for i in range(max(indices) + 1)]
    manifest: dict[str, Any] = {
        "version": 1,
        "name": "golden demo",
        "kind": "convert",
        "backend": backend,
        "image": "/cvmfs/images/sbt batch's.sif",
        "binds": ["/data", "/cvmfs:/cvmfs:ro", "/scratch/o'brien"],
        "container_runtime": None,
        "sbt_command": SBT_COMMAND,
        "env": {"OMP_NUM_THREADS": "4", "GREETING": "it's a $HOME \"test\""},
        "setup": ["module load apptainer 2>/dev/null || true"],
        "extra_directives": [],
        "template": None,
        "launcher": [],
        "workdir": "/home/user/analysis",
        "after": {},
        "options": {},
        "condor": {},
        "resources": {"cpus": 4, "gpus": 1, "time": "04:00:00", "time_seconds": 14400, "mem": "16G", "mem_mb": 16384,
                      "partition": "gpu", "account": "atlas-trigger", "accounting_group": "group_atlas.trigger",
                      "max_running": 50, "retries": 2, "hold": False, "nodes": None, "ntasks": None},
        **settings,
        "tasks": [t.to_dict() for t in tasks],
        "submissions": [],
    }
    return Run(RUN_DIR, manifest)


def check_golden(name: str, text: str) -> None:
    """``text`` must equal ``golden/name`` byte for byte (rewritten instead with SBT_BATCH_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text.encode())
        return
    assert path.is_file(), f"{path} missing: run with SBT_BATCH_UPDATE_GOLDEN=1 to create it"
    expected = path.read_bytes().decode()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), f"golden/{name}", "rendered"))
        pytest.fail(f"rendered {name} differs from the golden file (SBT_BATCH_UPDATE_GOLDEN=1 rewrites it after review):\n{diff}")


def test_slurm_array_script():
    """An array above MaxArraySize's first block (offset 1000, throttled), waiting for another run, in an image."""
    run = golden_run("slurm", [1000, 1001, 1002, 1005],
                     extra_directives=["--qos=normal", "--constraint=a100&ib", "--comment=o'brien's run"],
                     after={"run": "/scratch/runs/prepare-20250101T000000Z", "backend": "slurm", "job_ids": ["4242_0", "4242_1"]})
    text = SlurmBackend().render(run, [1000, 1001, 1002, 1005])
    assert '"$((SLURM_ARRAY_TASK_ID + 1000))"' in text and "#SBATCH --array=0-2,5%50" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0  # parses, runs nothing
    check_golden("slurm-array.sh", text)


def test_condor_submit_description():
    """The same kind of run on HTCondor: container universe, retries, throttle, accounting group, extra lines."""
    run = golden_run("condor", [3, 4, 7],
                     extra_directives=['+JobFlavour = "longlunch"', 'requirements = (OpSysAndVer == "AlmaLinux9")'])
    text = CondorBackend().render(run, [3, 4, 7])
    assert "universe                = container" in text and "queue task from (" in text
    if importlib.util.find_spec("htcondor2") is not None:  # the bindings read it as one job per task
        import htcondor2

        sub = htcondor2.Submit(text)
        assert list(sub.itemdata()) == [{"task": "3"}, {"task": "4"}, {"task": "7"}]
        assert sub.expand("initialdir") == str(RUN_DIR)
    check_golden("condor-job.sub", text)


# ---- what the golden files rest on: the packaged defaults and site profiles, and the user's overrides --------


def test_user_defaults_override_single_keys(tmp_path: Path):
    """``~/.config/sbt-batch/defaults.yaml`` changes one key of a section; the rest stays the package's."""
    from sbt_batch.batch.profiles import backend_defaults
    from sbt_batch.common.errors import UserError

    config = tmp_path / "config" / "sbt-batch"
    config.mkdir(parents=True)
    (config / "defaults.yaml").write_text("slurm:\n  container_runtime: singularity\n")
    assert backend_defaults("slurm")["container_runtime"] == "singularity"
    assert backend_defaults("slurm")["max_array_size"] == 1001
    run = golden_run("slurm", [0])
    assert "exec singularity exec --nv" in SlurmBackend().render(run, [0])
    (config / "defaults.yaml").write_text("slurm:\n  max_aray_size: 5\n")
    with pytest.raises(UserError, match="did you mean 'max_array_size'"):
        backend_defaults("slurm")


def test_site_profiles_are_package_data_and_user_profiles_win(tmp_path: Path):
    """``--site hpc-slurm`` finds the package's example; a user's profile of the same name replaces it."""
    import sbt_batch.batch.profiles as P

    assert P.find_profile("hpc-slurm").parent == P.PACKAGE_SITES
    assert P.load_profile("tier3-condor")["backend"] == "condor"
    mine = tmp_path / "config" / "sbt-batch" / "hpc-slurm.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("backend: slurm\npartition: short\n")
    assert P.load_profile("hpc-slurm")["partition"] == "short"
    with pytest.raises(P.UserError, match="no such profile"):
        P.find_profile("defaults")  # the defaults file is not a profile
