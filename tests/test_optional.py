"""Optional packages (sbt_batch.common.optional): one install hint each, and a light install that says what to add.

The "light install" runs start ``sbt-batch`` in a Python where the named packages cannot be imported
(``None`` in ``sys.modules`` makes ``import X`` fail and ``find_spec(X)`` return None), as when an
extra is not installed.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error

from sbt_batch.common import optional
from sbt_batch.common.errors import UserError

# Runs the CLI with some packages made unimportable: python -c BLOCKED "pkg1,pkg2" ARGS...
BLOCKED = (
    "import sys\n"
    "sys.modules.update(dict.fromkeys([m for m in sys.argv[1].split(',') if m], None))\n"
    "from sbt_batch.cli import main\n"
    "main(sys.argv[2:])\n"
)


def run_without(modules: list[str], *args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``sbt-batch ARGS`` in a subprocess where ``modules`` cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCKED, ",".join(modules), *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- the module


def test_require_returns_the_module() -> None:
    assert optional.require("json", "a test") is sys.modules["json"]


def test_require_missing_is_one_line_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(UserError) as err:
        optional.require("tensorflow", "sbt-batch train")
    assert str(err.value) == ("sbt-batch train: TensorFlow is not installed in this Python; "
                              "install it with: pip install 'sbt-batch[train]'")
    monkeypatch.setitem(sys.modules, "horovod", None)
    with pytest.raises(UserError, match=r"^--ranks: Horovod is not installed .*: bash scripts/build-horovod\.sh$"):
        optional.require("horovod.tensorflow", "--ranks")


def test_require_tells_a_broken_package_from_a_missing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sbt_broken_pkg.py").write_text("import sbt_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as err:
        optional.require("sbt_broken_pkg", "a test")
    text = str(err.value)
    assert "does not import" in text and "sbt_no_such_dependency" in text and "\n" not in text
    with pytest.raises(UserError, match="sbt_not_there is not installed"):
        optional.require("sbt_not_there", "a test")


def test_available_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    assert optional.available("json")
    assert not optional.available("sbt_batch_no_such_module")
    assert not optional.available("sbt_batch_no_such_module.sub")  # a missing parent is no error
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert not optional.available("tensorflow")
    monkeypatch.delitem(sys.modules, "tensorflow")
    if optional.available("tensorflow"):
        assert "tensorflow" not in sys.modules  # found, not imported


def test_check_and_try_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(UserError, match=r"--cluster slurm: dask-jobqueue .*pip install 'sbt-batch\[jobqueue\]'"):
        optional.check("dask_jobqueue", "--cluster slurm")
    assert optional.try_import("dask_jobqueue") is None
    assert isinstance(optional.try_import("json"), types.ModuleType)


def test_every_extra_named_exists_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = set(cfg["options.extras_require"])
    named = {dep.extra for dep in optional.DEPENDENCIES.values() if dep.extra}
    assert named <= extras, named - extras
    for dep in optional.DEPENDENCIES.values():
        assert dep.hint.startswith(("pip install ", "bash scripts/")), dep


def test_importing_the_library_loads_no_optional_package() -> None:
    code = ("import sys, sbt_batch.common.optional, sbt_batch.convert, sbt_batch.cnn.models, sbt_batch.cnn.train; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'horovod', 'htcondor2', "
            "'dask_jobqueue', 'tf2onnx', 'onnxruntime', 'mpi4py', 'ROOT', 'XRootD'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- a light install, end to end


def test_train_without_tensorflow_says_what_to_install(tmp_path: Path) -> None:
    r = run_without(["tensorflow", "keras"], "train", "--signal", tmp_path / "s.h5", "--background", tmp_path / "b.h5",
                    "--out", tmp_path / "run", "--epochs", "1")
    assert_one_line_error(r, "sbt-batch train", "TensorFlow is not installed", "pip install 'sbt-batch[train]'")
    assert not (tmp_path / "run").exists()


def test_train_tabular_without_tensorflow(tmp_path: Path) -> None:
    r = run_without(["tensorflow", "keras"], "train-tabular", "--data", tmp_path / "k.csv", "--out", tmp_path / "run")
    assert_one_line_error(r, "sbt-batch train-tabular", "TensorFlow is not installed", "pip install 'sbt-batch[train]'")


def test_export_onnx_without_tf2onnx(tmp_path: Path) -> None:
    r = run_without(["tf2onnx"], "export", tmp_path / "run", "--format", "onnx")
    assert_one_line_error(r, "sbt-batch export --format onnx", "tf2onnx is not installed", "pip install 'sbt-batch[train]'")


def test_submit_to_condor_without_the_bindings(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "f0.root").write_bytes(b"x")  # not read: the bindings are checked before anything is submitted
    r = run_without(["htcondor2", "htcondor"], "submit", "convert", inputs, "-o", tmp_path / "out", "--backend", "condor",
                    "--runs-dir", tmp_path / "runs")
    assert_one_line_error(r, "--backend condor", "htcondor2", "pip install 'sbt-batch[condor]'")
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run directory left behind
