"""sample-ntuples: the real layout, TTree or RNTuple, compressions, baskets, --from-hdf5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot
from conftest import assert_one_line_error

from sbt_batch.convert.samples import N_TOWERS, generate_events, make_sample_ntuples, tower_map, write_ntuple

# fCompress = algorithm * 100 + level (ROOT's convention)
ALGORITHM = {"zlib": 1, "lzma": 2, "lz4": 4, "zstd": 5}


def test_cli_writes_the_real_layout(sbt, tmp_path: Path):
    result = sbt("sample-ntuples", tmp_path, "--kind", "background", "--files", "2", "--events", "250", "--basket-events", "100")
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.root"))
    assert [f.name for f in files] == ["background_000.root", "background_001.root"]
    with uproot.open(files[0]) as f:
        tree, maps = f["mytree"], f["maps"]
        assert f.classnames()["mytree;1"] == "TTree"
        assert tree.num_entries == 250 and maps.num_entries == 1
        assert tree["gTowerEt"].typename == f"float[{N_TOWERS}]"
        assert tree["Kt4EMTopoEventShape_Density"].typename == "float"
        assert maps["gTowerEta"].typename == maps["gTowerPhi"].typename == f"float[{N_TOWERS}]"
        assert tree["gTowerEt"].num_baskets == 3  # several baskets per branch
        et = tree["gTowerEt"].array(library="np")
        assert et.shape == (250, N_TOWERS) and et.dtype == np.float32
        assert (et < 0).any() and 500 < et.mean() < 3000  # MeV, loosely like the real data
    with uproot.open(files[1]) as f:
        assert not np.array_equal(f["mytree"]["gTowerEt"].array(library="np"), et)


def test_signal_is_more_central_than_background():
    eta, _, _ = tower_map()
    central = np.abs(eta) < 1.5
    sig, _ = generate_events("signal", 1500, np.random.default_rng(1))
    bkg, _ = generate_events("background", 1500, np.random.default_rng(1))
    assert sig[:, central].sum(axis=1).mean() > 1.3 * bkg[:, central].sum(axis=1).mean()
    assert sig[:, central].max(axis=1).mean() > 2 * bkg[:, central].max(axis=1).mean()
    # forward activity is similar: the difference is central
    assert sig[:, ~central].mean() == pytest.approx(bkg[:, ~central].mean(), rel=0.3)


def test_reproducible_with_seed(tmp_path: Path):
    a = make_sample_ntuples(tmp_path / "a", "signal", 1, 50, seed=7)[0]
    b = make_sample_ntuples(tmp_path / "b", "signal", 1, 50, seed=7)[0]
    c = make_sample_ntuples(tmp_path / "c", "signal", 1, 50, seed=8)[0]
    read = lambda p: uproot.open(p)["mytree"]["gTowerEt"].array(library="np")
    np.testing.assert_array_equal(read(a), read(b))
    assert not np.array_equal(read(a), read(c))


@pytest.mark.parametrize("name", sorted(ALGORITHM))
def test_compressions(tmp_path: Path, name: str):
    eta, phi, _ = tower_map()
    et, rho = generate_events("background", 20, np.random.default_rng(0))
    path = write_ntuple(tmp_path / f"{name}.root", et, rho, eta, phi, compression=f"{name}:3", basket_events=7)
    with uproot.open(path) as f:
        assert f.file.fCompress == ALGORITHM[name] * 100 + 3
        np.testing.assert_array_equal(f["mytree"]["gTowerEt"].array(library="np"), et)
        assert f["mytree"]["gTowerEt"].num_baskets == 3


def test_rntuple_and_shuffled_towers(tmp_path: Path):
    path = make_sample_ntuples(tmp_path, "signal", 1, 30, rntuple=True, shuffle_towers=True)[0]
    eta, phi, _ = tower_map()
    with uproot.open(path) as f:
        assert f.classnames()["mytree;1"] == "ROOT::RNTuple"
        assert f["mytree"].arrays(library="np")["gTowerEt"].shape == (30, N_TOWERS)
        m = f["maps"].arrays(library="np")
        stored_eta = np.asarray(m["gTowerEta"][0])
        assert not np.array_equal(stored_eta, eta)
        assert sorted(zip(stored_eta, m["gTowerPhi"][0])) == sorted(zip(eta, phi))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--files", "1"], ["--kind", "required"]),
        (["--kind", "higgs"], ["--kind", "higgs"]),
        (["--kind", "signal", "--compression", "brotli"], ["--compression", "brotli"]),
        (["--kind", "signal", "--files", "0"], ["--files"]),
    ],
)
def test_bad_options(sbt, tmp_path: Path, args, needles):
    assert_one_line_error(sbt("sample-ntuples", tmp_path / "out", *args), *needles)


def test_from_hdf5_bad_inputs(sbt, tmp_path: Path):
    (tmp_path / "x.h5").write_text("not hdf5")
    assert_one_line_error(sbt("sample-ntuples", tmp_path / "o", "--from-hdf5", tmp_path / "x.h5"), "x.h5", "HDF5")
    assert_one_line_error(sbt("sample-ntuples", tmp_path / "o", "--from-hdf5", tmp_path / "y.h5"), "y.h5", "no such file")
    import h5py

    with h5py.File(tmp_path / "z.h5", "w") as h5:
        h5["gTowerEt"] = np.zeros((3, 27, 32), np.float32)
        h5["offlineRho"] = np.zeros(3, np.float32)
    assert_one_line_error(sbt("sample-ntuples", tmp_path / "o", "--from-hdf5", tmp_path / "z.h5"), "z.h5", "27x32")
    assert not list((tmp_path / "o").glob("*.root")) if (tmp_path / "o").exists() else True
