"""sbt-batch selfcheck: versions, Horovod build, GPUs, tools; never a crash when TF/Horovod are absent."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, require

from sbt_batch.container import selfcheck


def test_selfcheck_quick_json_lists_the_stack(sbt):
    result = sbt("selfcheck", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["packages"]["numpy"] == metadata.version("numpy")
    assert report["packages"]["uproot"] == metadata.version("uproot")
    assert set(report["tools"]) >= {"sbatch", "condor_submit", "apptainer", "podman"}
    for info in report["tools"].values():
        assert (info["path"] is None) == (info["version"] is None)
    assert set(report["gpus"]) == {"nvidia_smi", "CUDA_VISIBLE_DEVICES", "tensorflow"}
    assert "horovod" in report and "version" in report["horovod"]


def test_selfcheck_tables_import_tensorflow(sbt):
    require(selfcheck.package_versions()["tensorflow"] != selfcheck.NOT_INSTALLED, "tensorflow not installed")
    result = sbt("selfcheck", "--require", "tensorflow", env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    for title in ("Stack", "Horovod", "GPUs", "Batch and container tools"):
        assert title in result.stdout
    assert "tensorflow import" in result.stdout and "ok (built with CUDA" in result.stdout
    assert "tensorflow sees" in result.stdout


def test_selfcheck_require_missing_tool_is_one_line_error(sbt, tmp_path):
    result = sbt("selfcheck", "--quick", "--require", "podman", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, "selfcheck", "podman not on PATH")
    result = sbt("selfcheck", "--quick", "--require", "tensorflw")
    assert_one_line_error(result, "--require", "unknown component")


def _bare_site(tmp_path: Path) -> Path:
    """A folder with only sbt-batch's light dependencies (rich), so TF/Horovod/numpy are absent."""
    site = tmp_path / "site"
    site.mkdir()
    venv_site = Path(metadata.distribution("rich").locate_file(""))
    for name in ("rich", "markdown_it", "mdurl", "pygments"):
        (site / name).symlink_to(venv_site / name)
    (site / "sbt_batch").symlink_to(REPO / "sbt_batch")
    return site


def test_selfcheck_without_tensorflow_or_horovod_says_not_installed(tmp_path):
    # a real interpreter without the heavy stack: system python3 (-I: no user site), only rich on the path
    python = "/usr/bin/python3"
    require(Path(python).exists(), "system python3 needed for the bare environment")
    site = _bare_site(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from sbt_batch.container import selfcheck as s; r = s.collect();"
        "print(r['packages']['tensorflow'], r['packages']['horovod'], r['packages']['numpy']);"
        "print(s.missing(r, ['tensorflow', 'horovod']));"
        "from rich.console import Console; c = Console();"
        "[c.print(item) for item in s.render(r)]"  # render() returns what the CLI prints
    )
    proc = subprocess.run([python, "-I", "-c", code, str(site)], capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "not installed not installed not installed"
    assert "tensorflow not installed" in lines[1] and "horovod not installed" in lines[1]
    assert "Horovod" in proc.stdout and "Batch and container tools" in proc.stdout


def _fake_packages(tmp_path: Path, tf_init: str, hvd_init: str | None = None) -> dict[str, str]:
    pkgs = tmp_path / "fake"
    (pkgs / "tensorflow").mkdir(parents=True)
    (pkgs / "tensorflow" / "__init__.py").write_text(tf_init)
    if hvd_init is not None:
        (pkgs / "horovod" / "tensorflow").mkdir(parents=True)
        (pkgs / "horovod" / "__init__.py").write_text("")
        (pkgs / "horovod" / "tensorflow" / "__init__.py").write_text(hvd_init)
    return {**os.environ, "PYTHONPATH": f"{pkgs}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_probe_reports_fake_broken_tensorflow_without_crashing(tmp_path, monkeypatch):
    env = _fake_packages(tmp_path, "raise RuntimeError('libtensorflow_framework.so.2: cannot open')\n",
                         "import os\nos.abort()\n")
    monkeypatch.setattr(os, "environ", env)
    probe = selfcheck.probe_frameworks(tensorflow=True, horovod=False, timeout=120)
    assert "RuntimeError" in probe["tensorflow"]["error"]
    # a Horovod import that kills the interpreter is reported, not propagated
    crashed = selfcheck.probe_frameworks(tensorflow=False, horovod=True, timeout=120)
    assert "error" in crashed["horovod"]


def test_missing_reports_broken_imports():
    report = {
        "packages": {"tensorflow": "2.21.0", "horovod": "0.28.1", "numpy": "2.0"},
        "tools": {"podman": {"path": "/usr/bin/podman", "version": "4"}},
        "tensorflow": {"error": "ImportError: boom"},
        "horovod": {"version": "0.28.1", "frameworks": {"tensorflow": False}, "build": {"mpi": True}},
    }
    problems = selfcheck.missing(report, ["tensorflow", "horovod", "numpy", "podman"])
    assert problems == ["tensorflow does not import (ImportError: boom)", "horovod was built without TensorFlow"]


def test_package_versions_unknown_is_not_installed():
    versions = selfcheck.package_versions({"nope": ("sbt-batch-no-such-dist",), "pytest": ("pytest",)})
    assert versions == {"nope": selfcheck.NOT_INSTALLED, "pytest": metadata.version("pytest")}


@pytest.mark.horovod
def test_selfcheck_shows_horovod_build(sbt):
    require(selfcheck.package_versions()["horovod"] != selfcheck.NOT_INSTALLED,
            "horovod not installed (scripts/build-horovod.sh)")
    result = sbt("selfcheck", "--json", "--require", "horovod")
    assert result.returncode == 0, result.stderr
    hvd = json.loads(result.stdout)["horovod"]
    assert hvd["frameworks"]["tensorflow"] is True
    assert "error" not in hvd["build"], hvd["build"]
