"""Every bad input: one line naming the file and the problem, non-zero exit, no partial output; --skip-bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot
from conftest import assert_one_line_error

from sbt_batch.common.errors import EXIT_SKIPPED_BAD
from sbt_batch.convert.samples import make_sample_ntuples, tower_map


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One good ntuple and one of each kind of bad input."""
    d = tmp_path_factory.mktemp("bad-inputs")
    (good,) = make_sample_ntuples(d / "good", "signal", 1, 300, basket_events=100)
    bad: dict[str, Path] = {"good": good}
    bad["text"] = d / "text.root"
    bad["text"].write_text("this is not a ROOT file\n")
    bad["truncated"] = d / "truncated.root"
    bad["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # corrupt: garbage inside the second gTowerEt basket, header and metadata intact
    with uproot.open(good) as f:
        seek = int(f["mytree"]["gTowerEt"].member("fBasketSeek")[1])
    data = bytearray(good.read_bytes())
    data[seek + 200 : seek + 1200] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    bad["corrupt"] = d / "corrupt.root"
    bad["corrupt"].write_bytes(bytes(data))
    eta, phi, _ = tower_map()
    with uproot.recreate(d / "nobranch.root") as f:
        f.mktree("mytree", {"gTowerEt": (np.float32, (1184,))})
        f["mytree"].extend({"gTowerEt": np.zeros((5, 1184), np.float32)})
        f.mktree("maps", {"gTowerEta": (np.float32, (1184,)), "gTowerPhi": (np.float32, (1184,))})
        f["maps"].extend({"gTowerEta": eta[None], "gTowerPhi": phi[None]})
    bad["nobranch"] = d / "nobranch.root"
    with uproot.recreate(d / "short.root") as f:
        f.mktree("mytree", {"gTowerEt": (np.float32, (1000,)), "Kt4EMTopoEventShape_Density": np.float32})
        f["mytree"].extend({"gTowerEt": np.zeros((5, 1000), np.float32), "Kt4EMTopoEventShape_Density": np.zeros(5, np.float32)})
        f.mktree("maps", {"gTowerEta": (np.float32, (1184,)), "gTowerPhi": (np.float32, (1184,))})
        f["maps"].extend({"gTowerEta": eta[None], "gTowerPhi": phi[None]})
    bad["short"] = d / "short.root"
    return bad


def assert_no_output(directory: Path) -> None:
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith((".out", "out"))]
    assert not leftovers, leftovers


@pytest.mark.parametrize(
    "which, extra, needles",
    [
        ("missing", [], ["missing.root", "no such file"]),
        ("text", [], ["text.root", "not a ROOT file"]),
        ("truncated", [], ["truncated.root", "truncated"]),
        ("corrupt", [], ["corrupt.root", "tree 'mytree'", "corrupt"]),
        ("good", ["--tree", "events"], ["good", "no tree 'events'"]),
        ("good", ["--maps-tree", "geo"], ["no tree 'geo'"]),
        ("nobranch", [], ["nobranch.root", "no branch 'Kt4EMTopoEventShape_Density'"]),
        ("short", [], ["short.root", "1000 towers", "1184"]),
        ("good", ["--eta-max", "4"], ["signal_000.root", "tree 'maps'", "full grid"]),
        ("corrupt", ["--workers", "2"], ["corrupt.root", "corrupt"]),
    ],
)
def test_bad_input_one_line_error_no_output(sbt, files, tmp_path: Path, which, extra, needles):
    path = files.get(which, tmp_path / "missing.root")
    result = sbt("convert", files["good"], path, "--output", tmp_path / "out.h5", "--workers", "1", *extra)
    assert_one_line_error(result, *needles)
    assert_no_output(tmp_path)


@pytest.mark.parametrize("target", ["no-such-dir/out.h5", "file.txt/out.h5", "adir"])
def test_unwritable_output(sbt, files, tmp_path: Path, target: str):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    result = sbt("convert", files["good"], "--output", tmp_path / target)
    assert_one_line_error(result, str(tmp_path / target).rsplit("/", 1)[0] if "/" in target else "adir")


def test_bad_options(sbt, files, tmp_path: Path):
    out = tmp_path / "out.h5"
    assert_one_line_error(sbt("convert", files["good"], "-o", out, "--step-size", "lots"), "--step-size")
    assert_one_line_error(sbt("convert", files["good"], "-o", out, "--workers", "0"), "--workers")
    assert_one_line_error(sbt("convert", files["good"], "-o", out, "--cluster", "pbs", "--jobs", "1"), "--cluster", "pbs")
    assert_one_line_error(sbt("convert", files["good"], "-o", out, "--jobs", "2", "--workers", "2"), "--jobs")
    assert_one_line_error(sbt("convert", files["good"], "-o", out, "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"), "--scheduler")
    assert_no_output(tmp_path)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_skip_bad_lists_skipped_files_and_exits_3(sbt, files, tmp_path: Path, workers: str):
    good = files["good"]
    copy = tmp_path / "good2.root"
    shutil.copy(good, copy)
    inputs = [good, files["text"], files["corrupt"], copy, tmp_path / "gone.root"]
    inputs[-1].write_bytes(b"")  # an empty file: not ROOT
    result = sbt("convert", *inputs, "--output", tmp_path / "out.h5", "--skip-bad", "--workers", workers, env={"COLUMNS": "400"})
    assert result.returncode == EXIT_SKIPPED_BAD, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("text.root", "corrupt.root", "gone.root"):
        assert name in result.stdout
    with h5py.File(tmp_path / "out.h5", "r") as h5:
        assert h5["gTowerEt"].shape[0] == 600 and h5["offlineRho"].shape[0] == 600
        assert [str(p) for p in h5.attrs["inputs"]] == [str(good), str(copy)]
        assert h5.attrs["n_skipped"] == 3
        assert "not a ROOT file" in h5.attrs["skipped"] and "corrupt" in h5.attrs["skipped"]
        a = h5["gTowerEt"][:300]
        np.testing.assert_array_equal(a, h5["gTowerEt"][300:])
        np.testing.assert_array_equal(h5["fileIndex"][()], np.repeat([0, 1], 300))


def test_skip_bad_with_nothing_left_fails(sbt, files, tmp_path: Path):
    result = sbt("convert", files["text"], "--output", tmp_path / "out.h5", "--skip-bad")
    assert_one_line_error(result, "no readable inputs", "text.root")
    assert_no_output(tmp_path)
