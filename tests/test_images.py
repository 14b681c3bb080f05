"""Container images: command construction, one-line errors, and a real podman pull of an archive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pytest
from conftest import REPO, assert_one_line_error, require

from sbt_batch import __version__
from sbt_batch.common.errors import UserError
from sbt_batch.container import images

ME = f"{os.getuid()}:{os.getgid()}"


# ---- argv inside an image -----------------------------------------------------------------------


def test_apptainer_exec_prefix_with_binds_and_gpu():
    words = images.exec_prefix("apptainer", "/scratch/sbt.sif", binds=["/data:/data:ro", "/scratch"], gpus=1, workdir="/scratch")
    assert words == ["apptainer", "exec", "--nv", "--bind", "/data:/data:ro", "--bind", "/scratch:/scratch",
                     "--pwd", "/scratch", "/scratch/sbt.sif"]


def test_apptainer_takes_registry_names_as_docker_refs():
    assert images.exec_prefix("singularity", "ghcr.io/x/sbt-batch:1-cpu")[-1] == "docker://ghcr.io/x/sbt-batch:1-cpu"
    assert images.exec_prefix("apptainer", "docker://ghcr.io/x/y:1")[-1] == "docker://ghcr.io/x/y:1"
    assert "--nv" not in images.exec_prefix("apptainer", "a.sif")


def test_podman_run_prefix_has_no_network_and_mounts():
    words = images.exec_prefix("podman", "docker://localhost/sbt-batch:1-cpu", binds=["/runs"], gpus=2, workdir="/runs",
                               env={"OMP_NUM_THREADS": "1"})
    assert words[:5] == ["podman", "run", "--rm", "--network", "none"]
    assert ["-v", "/runs:/runs"] == words[words.index("-v"):words.index("-v") + 2]
    assert ["--device", "nvidia.com/gpu=all"] == words[words.index("--device"):words.index("--device") + 2]
    assert ["-e", "OMP_NUM_THREADS=1"] == words[words.index("-e"):words.index("-e") + 2]
    assert words[-1] == "localhost/sbt-batch:1-cpu"
    if os.getuid() == 0:
        assert ["--user", ME] == words[words.index("--user"):words.index("--user") + 2]
    else:
        assert "keep-id" in words


def test_docker_gpus_and_exec_argv_replaces_entrypoint():
    argv = images.exec_argv("docker", "sbt-batch:1-gpu", ["sbt-batch", "task", "run", "/runs/r", "3"], gpus=1)
    assert argv[:2] == ["docker", "run"]
    assert ["--gpus", "all"] == argv[argv.index("--gpus"):argv.index("--gpus") + 2]
    i = argv.index("--entrypoint")
    assert argv[i:] == ["--entrypoint", "sbt-batch", "sbt-batch:1-gpu", "task", "run", "/runs/r", "3"]
    assert images.exec_argv("apptainer", "a.sif", ["sbt-batch", "selfcheck"])[-3:] == ["a.sif", "sbt-batch", "selfcheck"]


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: images.exec_prefix("podman", "/images/sbt.sif"), "cannot run a SIF"),
        (lambda: images.exec_prefix("charliecloud", "x:1"), "not supported"),
        (lambda: images.exec_prefix("apptainer", "a.sif", binds=["data:/data"]), "absolute"),
        (lambda: images.exec_prefix("apptainer", "a.sif", binds=["/a,/b"]), "without commas"),
        (lambda: images.exec_prefix("apptainer", "a.sif", binds=["/a:/b:rx"]), "invalid bind"),
        (lambda: images.exec_prefix("apptainer", "--help"), "invalid image reference"),
        (lambda: images.exec_prefix("podman", "x:1", env={"BAD-NAME": "1"}), "invalid variable"),
        (lambda: images.exec_argv("podman", "x:1", []), "no command"),
        (lambda: images.condor_image_settings("x:1", style="docker"), "style"),
    ],
)
def test_bad_wrapper_input_raises_user_error(call, needle):
    with pytest.raises(UserError, match=needle):
        call()


def test_condor_image_settings():
    assert images.condor_image_settings("/cvmfs/unpacked.cern.ch/ghcr.io/x/sbt-batch:1-cpu") == {
        "container_image": "/cvmfs/unpacked.cern.ch/ghcr.io/x/sbt-batch:1-cpu"}
    assert images.condor_image_settings("ghcr.io/x/y:1") == {"container_image": "docker://ghcr.io/x/y:1"}
    assert images.condor_image_settings("/s/y.sif", style="singularity") == {"+SingularityImage": '"/s/y.sif"'}


# ---- pull and build commands ----------------------------------------------------------------------


def test_pull_commands(tmp_path):
    dest = tmp_path / "x.sif"
    assert images.pull_command("apptainer", "ghcr.io/x/sbt-batch:1-cpu", dest) == [
        "apptainer", "pull", "--force", str(dest), "docker://ghcr.io/x/sbt-batch:1-cpu"]
    assert images.pull_command("apptainer", "docker-archive:/c/img.tar", dest)[:2] == ["apptainer", "build"]
    assert images.pull_command("podman", "docker://ghcr.io/x/y:1") == ["podman", "pull", "ghcr.io/x/y:1"]
    assert images.pull_command("podman", "docker-archive:/c/img.tar") == ["podman", "pull", "docker-archive:/c/img.tar"]
    assert images.pull_command("docker", "docker-archive:/c/img.tar") == ["docker", "load", "-i", "/c/img.tar"]
    assert images.sif_name("docker://ghcr.io/x/sbt-batch:0.1.0-cpu") == "ghcr.io_x_sbt-batch_0.1.0-cpu.sif"
    assert images.sif_name("docker-archive:/c/sbt-batch-0.1.0-cpu.docker.tar") == "sbt-batch-0.1.0-cpu.docker.sif"


def test_default_ref_follows_version_and_env(monkeypatch):
    monkeypatch.delenv("SBT_BATCH_IMAGE_REPO", raising=False)
    assert images.default_ref() == f"{images.DEFAULT_REPOSITORY}:{__version__}-cpu"
    monkeypatch.setenv("SBT_BATCH_IMAGE_REPO", "registry.example.org/atlas/sbt")
    assert images.default_ref(gpu=True) == f"registry.example.org/atlas/sbt:{__version__}-gpu"


def test_build_commands_cpu_and_gpu():
    cpu = images.build_command("podman", REPO, "sbt-batch:t-cpu", base="localhost/base:1")
    assert cpu[:4] == ["podman", "build", "--network", "host"]
    assert "BASE_IMAGE=localhost/base:1" in cpu and "VARIANT=cpu" in cpu
    assert cpu[-5:] == ["-f", str(REPO / "containers" / "Dockerfile"), "-t", "sbt-batch:t-cpu", str(REPO)]
    gpu = images.build_command("docker", REPO, "sbt-batch:t-gpu", gpu=True, build_args={"USER_UID": "2000"})
    assert "VARIANT=gpu" in gpu and "USER_UID=2000" in gpu
    assert any(a.startswith("BASE_IMAGE=nvidia/cuda:") and "runtime" in a for a in gpu)
    assert "TF_PACKAGE=tensorflow[and-cuda]==2.21.0" in gpu
    assert images.find_context() == REPO


# ---- CLI errors (one line, no traceback) --------------------------------------------------------


def test_pull_without_any_runtime_is_one_line_error(sbt, tmp_path):
    result = sbt("image", "pull", "ghcr.io/x/sbt-batch:1-cpu", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, "no container runtime found", "apptainer")


def test_check_and_build_without_tools_are_one_line_errors(sbt, tmp_path):
    result = sbt("image", "check", "ghcr.io/x/sbt-batch:1-cpu", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, "no container runtime found")
    result = sbt("image", "build", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, "image build needs docker, podman or buildah")


@pytest.mark.parametrize(
    "args, needles",
    [
        (("image", "pull", "bad ref"), ("invalid image reference",)),
        (("image", "pull", "docker-archive:/no/such/image.tar"), ("/no/such/image.tar", "not found")),
        (("image", "pull", "x:1", "--runtime", "rkt"), ("--runtime", "rkt")),
        (("image", "check", "/no/such/image.sif"), ("/no/such/image.sif", "not found")),
        (("image", "build", "--context", "."), ("containers/Dockerfile not found",)),
        (("image", "build", "--build-arg", "NOEQUALS"), ("--build-arg", "KEY=VALUE")),
        (("image", "build", "--tag", "-x"), ("--tag", "invalid")),
        (("image", "list", "--runtime", "rkt"), ("--runtime", "rkt")),
    ],
)
def test_bad_image_input_is_one_line_error(sbt, tmp_path, args, needles):
    result = sbt(*args, cwd=tmp_path)
    assert_one_line_error(result, *needles)


def test_list_with_empty_cache_and_no_runtime(sbt, tmp_path):
    result = sbt("image", "list", "--json", env={"PATH": str(tmp_path), "SBT_BATCH_CACHE": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# ---- real podman: pull an image archive into a fresh storage ------------------------------------


@pytest.fixture
def podman_env(tmp_path):
    """A private podman storage/config (vfs, runc, no network) in tmp_path."""
    require(shutil.which("podman") is not None and shutil.which("runc") is not None,
            "podman and runc are needed (scripts/build-image.sh installs them)")
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\nnetns = "none"\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
                    f'events_logger = "file"\ntmp_dir = "{tmp_path}/tmp"\n')
    storage = tmp_path / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\nrunroot = "{tmp_path}/run"\n')
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage),
           "SBT_BATCH_CACHE": str(tmp_path / "cache")}
    yield env
    subprocess.run(["podman", "rmi", "-af"], env=env, capture_output=True, timeout=120)


def test_real_podman_pull_of_docker_archive(sbt, tmp_path, podman_env):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("hello from a test image\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    # make the archive with one storage, pull it with sbt-batch into another
    maker = {**podman_env, "CONTAINERS_STORAGE_CONF": str(tmp_path / "maker.conf")}
    (tmp_path / "maker.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/mgraph"\nrunroot = "{tmp_path}/mrun"\n')
    subprocess.run(["podman", "import", "-q", str(tmp_path / "rootfs.tar"), "localhost/sbt-batch-test:tiny"],
                   env=maker, check=True, capture_output=True, timeout=120)
    archive = tmp_path / "tiny.docker.tar"
    subprocess.run(["podman", "save", "--format", "docker-archive", "-o", str(archive), "localhost/sbt-batch-test:tiny"],
                   env=maker, check=True, capture_output=True, timeout=120)
    subprocess.run(["podman", "rmi", "-af"], env=maker, capture_output=True, timeout=120)

    result = sbt("image", "pull", f"docker-archive:{archive}", "--runtime", "podman", env=podman_env)
    assert result.returncode == 0, result.stderr
    assert "pulled" in result.stdout
    listed = sbt("image", "list", "--runtime", "podman", "--json", env=podman_env)
    assert listed.returncode == 0, listed.stderr
    assert any(row["image"] == "localhost/sbt-batch-test:tiny" for row in json.loads(listed.stdout))


def test_runtime_env_uses_the_build_image_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    monkeypatch.setenv("SBT_BATCH_CACHE", str(tmp_path))
    assert images.runtime_env("podman") is None
    (tmp_path / "podman").mkdir()
    for name in ("containers.conf", "storage.conf"):
        (tmp_path / "podman" / name).write_text("")
    env = images.runtime_env("podman")
    assert env is not None and env["CONTAINERS_CONF"] == str(tmp_path / "podman" / "containers.conf")
    assert images.runtime_env("apptainer") is None
    monkeypatch.setenv("CONTAINERS_CONF", "/etc/other.conf")
    assert images.runtime_env("podman") is None


def test_apptainer_definition_matches_the_archive_and_runs_selfcheck():
    text = (REPO / "containers" / "sbt-batch.def").read_text()
    header = dict(line.split(":", 1) for line in text.splitlines() if line and not line.startswith(("#", " ", "%")) and ":" in line)
    assert header["Bootstrap"].strip() in {"docker", "docker-daemon", "docker-archive"}
    # the archive that scripts/build-image.sh writes, for this version
    assert header["From"].strip() == f"sbt-batch-{__version__}-cpu.docker.tar"
    assert 'sbt-batch-${version}-cpu.docker.tar' in (REPO / "scripts" / "build-image.sh").read_text()
    sections = {block.split("\n", 1)[0].strip(): block for block in text.split("\n%")[1:]}
    assert "sbt-batch selfcheck" in sections["test"]
    assert 'sbt-batch "$@"' in sections["runscript"]


def test_container_requirements_swap_tensorflow_and_drop_mpi4py():
    import importlib.util

    spec = importlib.util.spec_from_file_location("container_requirements", REPO / "containers" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reqs = module.requirements(str(REPO / "setup.cfg"), ["train", "horovod", "condor"], "tensorflow[and-cuda]==2.21.0", {"mpi4py"})
    assert "tensorflow[and-cuda]==2.21.0" in reqs
    assert not any(r.startswith(("tensorflow-cpu", "mpi4py")) for r in reqs)
    assert any(r.startswith("uproot") for r in reqs) and any(r.startswith("htcondor") for r in reqs)
    with pytest.raises(SystemExit, match="no extra named"):
        module.requirements(str(REPO / "setup.cfg"), ["nope"], None, set())
