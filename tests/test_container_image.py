"""The real CPU image built by scripts/build-image.sh: selfcheck, conversion, training and Horovod inside it.

Opt-in (slow stage): SBT_BATCH_IMAGE_TESTS=1 bash scripts/build-image.sh, then
SBT_BATCH_IMAGE_TESTS=1 pytest tests/test_container_image.py. Every run uses --network none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import SHARED_DATA, require

from sbt_batch import __version__

pytestmark = [pytest.mark.container, pytest.mark.slow]

if os.environ.get("SBT_BATCH_IMAGE_TESTS") != "1":
    pytest.skip("image tests are opt-in: SBT_BATCH_IMAGE_TESTS=1 (after scripts/build-image.sh)", allow_module_level=True)

CACHE = Path(os.environ.get("SBT_BATCH_CACHE") or Path.home() / ".cache" / "sbt-batch")
WORK = CACHE / "podman"
IMAGE = os.environ.get("SBT_BATCH_IMAGE") or f"localhost/sbt-batch:{__version__}-cpu"
ARCHIVE = CACHE / "images" / f"sbt-batch-{__version__}-cpu.docker.tar"


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment that points podman at the storage/config of scripts/build-image.sh."""
    require(shutil.which("podman") is not None, "podman not installed (scripts/build-image.sh)")
    require((WORK / "containers.conf").is_file(), f"no podman config in {WORK}: run scripts/build-image.sh")
    env = {**os.environ, "CONTAINERS_CONF": str(WORK / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(WORK / "storage.conf"), "SBT_BATCH_CACHE": str(CACHE)}
    found = subprocess.run(["podman", "image", "exists", IMAGE], env=env, timeout=120)
    require(found.returncode == 0, f"image {IMAGE} not built: run scripts/build-image.sh")
    return env


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder that the image's non-root user can write."""
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def podman_run(env: dict[str, str], *args: str, out: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """podman run --rm --network none [data and out mounts] IMAGE ARGS."""
    mounts = ["-v", f"{SHARED_DATA}:/data:ro"] if SHARED_DATA.is_dir() else []
    if out is not None:
        mounts += ["-v", f"{out}:/out", "-w", "/out"]
    return subprocess.run(["podman", "run", "--rm", "--network", "none", *mounts, IMAGE, *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_selfcheck_inside_image(podman_env):
    result = podman_run(podman_env, "selfcheck", "--json", "--require", "tensorflow", "--require", "uproot")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sbt_batch"] == __version__
    assert report["packages"]["tensorflow"] == "2.21.0"
    for name in ("uproot", "dask", "htcondor", "h5py", "keras"):
        assert report["packages"][name] != "not installed", name
    assert report["environment"]["image"]["variant"] == "cpu"
    assert report["tools"]["mpirun"]["path"], "Open MPI missing in the image"
    assert report["tensorflow"]["gpus"] == []


def test_horovod_inside_image(podman_env):
    result = podman_run(podman_env, "selfcheck", "--json")
    report = json.loads(result.stdout)
    require(report["packages"]["horovod"] != "not installed", "image built without Horovod (scripts/build-horovod.sh missing)")
    hvd = report["horovod"]
    assert hvd["frameworks"]["tensorflow"] is True
    assert "error" not in hvd["build"], hvd["build"]
    # two ranks allreduce inside one container, over Gloo (no network namespace needed beyond loopback)
    code = ("import horovod.tensorflow as hvd, tensorflow as tf; hvd.init(); "
            "x = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum); print('sum', int(x.numpy()[0]))")
    run = podman_run(podman_env, "horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-c", code, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("sum 3") == 2, run.stdout


def test_image_is_non_root_with_labels(podman_env):
    result = podman_run(podman_env, "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "0"
    inspect = subprocess.run(["podman", "image", "inspect", IMAGE], env=podman_env, capture_output=True, text=True, timeout=120)
    config = json.loads(inspect.stdout)[0]
    labels = config["Labels"] or config.get("Config", {}).get("Labels", {})
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["io.sbt-batch.tensorflow.version"] == "2.21.0"
    assert labels["io.sbt-batch.horovod.version"]


def test_convert_inside_image(podman_env, out):
    made = podman_run(podman_env, "sample-ntuples", "/out/ntuples", "--kind", "signal", "--files", "2", "--events", "100", out=out)
    assert made.returncode == 0, made.stderr
    result = podman_run(podman_env, "convert", "/out/ntuples", "-o", "/out/sample.h5", "--workers", "1", out=out)
    assert result.returncode == 0, result.stderr
    import h5py

    with h5py.File(out / "sample.h5", "r") as f:
        assert f["gTowerEt"].shape[0] == 200


def test_one_epoch_training_inside_image(podman_env, out, gfex_dir):
    result = podman_run(podman_env, "train", "-s", "/data/*ZvvHbb*.hdf5", "-b", "/data/*JZ0W*.hdf5",
                        "--epochs", "1", "--max-events", "200", "-o", "/out/run", "--no-progress", out=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "run" / "model.keras").stat().st_size > 0


def test_sbt_batch_image_check_from_archive(sbt, tmp_path, podman_env):
    """`image pull docker-archive:` into a fresh storage, then `image check` runs selfcheck inside."""
    require(ARCHIVE.is_file(), f"{ARCHIVE} missing: run scripts/build-image.sh")
    runroot = Path(tempfile.mkdtemp(prefix="sbt-run.", dir="/tmp"))  # podman wants a runroot under 50 characters
    storage = tmp_path / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path}/graph"\nrunroot = "{runroot}"\n')
    env = {**podman_env, "CONTAINERS_STORAGE_CONF": str(storage)}
    try:
        pulled = sbt("image", "pull", f"docker-archive:{ARCHIVE}", "--runtime", "podman", env=env, timeout=900)
        assert pulled.returncode == 0, pulled.stderr
        checked = sbt("image", "check", IMAGE, "--runtime", "podman", "--quick", env=env, timeout=600)
        assert checked.returncode == 0, checked.stderr
        assert "Stack" in checked.stdout and "tensorflow" in checked.stdout
    finally:
        subprocess.run(["podman", "rmi", "-af"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(runroot, ignore_errors=True)
