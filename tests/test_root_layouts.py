"""convert on ntuples written by ROOT itself: float[N], std::vector<float> and RDataFrame's RVec<float>.

The real events of ../shared/data/gfex-hdf5 are embedded in each layout, with each of ROOT's
compression algorithms, several clusters per file and files of different cluster sizes, and must
come back bit-identical. Bad input (tower counts that differ from the maps, other element types,
a rho of the wrong shape, NaN or infinity) gets one line naming the file. The files are written
once per module by PyROOT in a subprocess (tests/root_fixtures.py); ROOT is the PyPI package
``root`` of the ``test`` extra, so under CI=true a missing ROOT fails these tests.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot
from conftest import assert_one_line_error, require
from root_fixtures import COMPRESSIONS, root_available, write_root_files

from sbt_batch.common.errors import EXIT_SKIPPED_BAD
from sbt_batch.convert import source as convert_source
from sbt_batch.convert.baskets import first_nonfinite, tower_layout
from sbt_batch.convert.driver import convert
from sbt_batch.convert.geometry import build_grid
from sbt_batch.convert.merge import merge_outputs
from sbt_batch.convert.samples import ETA_MAX_FOR_ROWS, embed_images, read_hdf5_images

ETA_MAX = ETA_MAX_FOR_ROWS[28]  # 2.7: the 28 rows of the real data
LAYOUTS = ("fixed", "vector", "rvec")
# two files per case, with different cluster sizes (ROOT's auto-flush, in entries)
FILES = (("a", 130, 25), ("b", 120, 47))


def load(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5}


def attrs(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return dict(h5.attrs)


@pytest.fixture(scope="module")
def real(gfex_signal, gfex_background) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images (n, 28, 32), rho (n,)) of the two real event sets embedded in the files a and b."""
    (n_a, n_b) = (FILES[0][1], FILES[1][1])
    sig, bkg = read_hdf5_images(gfex_signal[0]), read_hdf5_images(gfex_background[0])
    return {"a": (sig[0][:n_a], sig[1][:n_a]), "b": (bkg[0][:n_b], bkg[1][:n_b])}


def _embedded(images: np.ndarray, rho: np.ndarray, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return embed_images(images, rho, np.random.default_rng([seed, 7]), shuffle_towers=shuffle)


@pytest.fixture(scope="module")
def root_files(real, tmp_path_factory) -> dict:
    """Every file, written once by ROOT: {(layout, compression): [a, b]}, plus the bad inputs by name."""
    require(root_available(), "PyROOT not installed (pip install 'root>=0.1a12', the test extra)")
    d = tmp_path_factory.mktemp("root-layouts")
    specs: list[dict] = []
    good: dict = {}
    for li, layout in enumerate(LAYOUTS):
        for ci, (comp, code) in enumerate(COMPRESSIONS.items()):
            rho_kind = ("float", "double")[(li + ci) % 2]
            paths = []
            for fi, (name, _, flush) in enumerate(FILES):
                images, rho = real[name]
                full, eta, phi = _embedded(images, rho, 10 * li + 2 * ci + fi, shuffle=fi == 1)
                path = d / f"{layout}_{comp}_{name}.root"
                specs.append(dict(path=path, et=full, rho=rho, eta=eta, phi=phi, layout=layout, rho_kind=rho_kind, comp=code, flush=flush))
                paths.append(path)
            good[(layout, comp)] = paths
    bad: dict = {}
    images, rho = real["a"][0][:60], real["a"][1][:60]
    full, eta, phi = _embedded(images, rho, 99, shuffle=False)
    grid = build_grid(eta, phi, ETA_MAX)
    outside = int(np.flatnonzero(np.abs(eta) > ETA_MAX)[0])
    ragged = [row for row in full]
    ragged[17] = full[17][:1000]
    ragged[41] = np.concatenate([full[41], np.full(116, 7.0, np.float32)])
    nan, inf, nan_out = full.copy(), full.copy(), full.copy()
    nan[23, grid.index[100]] = np.nan
    inf[5, grid.index[3]] = np.inf
    nan_out[8, outside] = np.nan
    rho_nan = rho.astype(np.float64).copy()
    rho_nan[9] = np.nan
    common = dict(rho=rho, eta=eta, phi=phi, flush=20)
    cases = {
        "ragged": dict(et=ragged, layout="vector"),
        "ragged_rvec": dict(et=ragged, layout="rvec"),
        "vec_double": dict(et=full, layout="vector", elem="double"),
        "vec_int": dict(et=full, layout="vector", elem="int"),
        "rho2": dict(et=full, layout="vector", rho_kind="float2"),
        "nan": dict(et=nan, layout="vector"),
        "inf": dict(et=inf, layout="fixed", comp=404),
        "nan_outside": dict(et=nan_out, layout="vector"),
        "rho_nan": dict(et=full, layout="fixed", rho_kind="double", rho=rho_nan),
        "fixed_short": dict(et=full[:, :1000], layout="fixed"),
    }
    for name, case in cases.items():
        bad[name] = d / f"{name}.root"
        specs.append({**common, **case, "path": bad[name]})
    write_root_files(specs, d / "spool")
    return {"good": good, "bad": bad, "full": full, "ragged": ragged, "grid": grid, "images": images, "rho": rho}


def expected(real) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([real["a"][0], real["b"][0]]), np.concatenate([real["a"][1], real["b"][1]]))


def test_fixtures_have_the_layouts_of_real_files(root_files):
    """What ROOT wrote: std::vector / RVec as uproot's AsJagged with 10-byte headers, several clusters per file."""
    names = {"fixed": "float[1184]", "vector": "std::vector<float>", "rvec": "RVec<float>"}
    for (layout, _), paths in root_files["good"].items():
        for path, (_, n, flush) in zip(paths, FILES):
            with uproot.open(path) as f:
                branch = f["mytree"]["gTowerEt"]
                assert branch.typename == names[layout], branch.typename
                assert branch.num_entries == n and branch.num_baskets >= n // flush
                assert f["maps"]["gTowerEta"].typename == names[layout]
                found = tower_layout(branch)
                assert (found.items, found.header) == ((1184, 0) if layout == "fixed" else (None, 10))


@pytest.mark.parametrize("comp", list(COMPRESSIONS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_is_bit_identical(sbt, root_files, real, tmp_path: Path, layout: str, comp: str):
    out = tmp_path / "out.h5"
    result = sbt("convert", *root_files["good"][(layout, comp)], "-o", out, "--eta-max", ETA_MAX, "--workers", "1")
    assert result.returncode == 0, result.stderr
    got = load(out)
    images, rho = expected(real)
    np.testing.assert_array_equal(got["gTowerEt"], images)
    np.testing.assert_array_equal(got["offlineRho"], rho)
    assert got["offlineRho"].dtype == np.float32
    a = attrs(out)
    assert a["n_padded"] == 0 and not a["pad_towers"]


def test_baskets_are_gathered_directly(root_files, real, tmp_path: Path, monkeypatch):
    """Vectors and RVecs take the basket path, never uproot's generic (jagged) read."""

    def refuse(*args, **kwargs):
        raise AssertionError("uproot's generic read was used")

    monkeypatch.setattr(convert_source, "_uproot_steps", refuse)
    inputs = [root_files["good"][(layout, "lz4")][0] for layout in LAYOUTS]
    result = convert(inputs, tmp_path / "mixed.h5", eta_max=ETA_MAX, workers=1, step_size="40")
    assert result.events == 3 * FILES[0][1]
    got = load(tmp_path / "mixed.h5")["gTowerEt"]
    np.testing.assert_array_equal(got, np.concatenate([real["a"][0]] * 3))


@pytest.mark.slow
def test_dask_workers_match_in_process(root_files, tmp_path: Path):
    inputs = [root_files["good"][(layout, comp)][i] for layout, comp, i in (("vector", "zstd", 0), ("rvec", "zlib", 1), ("fixed", "lzma", 0))]
    one = convert(inputs, tmp_path / "one.h5", eta_max=ETA_MAX, workers=1)
    two = convert(inputs, tmp_path / "two.h5", eta_max=ETA_MAX, workers=2, step_size="64")
    assert one.events == two.events == 2 * 130 + 120
    a, b = load(tmp_path / "one.h5"), load(tmp_path / "two.h5")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("which", ["ragged", "ragged_rvec"])
def test_vector_length_differs_from_maps(sbt, root_files, tmp_path: Path, which: str):
    out = tmp_path / "out.h5"
    result = sbt("convert", root_files["bad"][which], "-o", out, "--eta-max", ETA_MAX)
    assert_one_line_error(result, f"{which}.root", "gTowerEt", "entry 17", "1000 towers", "1184", "--pad-towers")
    assert not list(tmp_path.iterdir())


def _padded_expectation(root_files, events: list[np.ndarray]) -> np.ndarray:
    n_towers = root_files["full"].shape[1]
    rows = np.zeros((len(events), n_towers), np.float32)
    for i, e in enumerate(events):
        rows[i, : min(len(e), n_towers)] = e[:n_towers]
    return rows[:, root_files["grid"].index].reshape(len(events), 28, 32)


def test_pad_towers_pads_truncates_and_counts(sbt, root_files, tmp_path: Path):
    out = tmp_path / "padded.h5"
    result = sbt("convert", root_files["bad"]["ragged"], "-o", out, "--eta-max", ETA_MAX, "--pad-towers")
    assert result.returncode == 0, result.stderr
    assert "padded" in result.stdout and "2 events padded or truncated" in result.stdout
    got = load(out)
    np.testing.assert_array_equal(got["gTowerEt"], _padded_expectation(root_files, root_files["ragged"]))
    a = attrs(out)
    assert a["pad_towers"] and a["n_padded"] == 2 and list(a["padded"]) == [2]
    # the same through dask workers (ranges that split the file), and summed by merge_outputs
    two = convert([root_files["bad"]["ragged"], root_files["bad"]["ragged_rvec"]], tmp_path / "two.h5",
                  eta_max=ETA_MAX, workers=2, step_size="20", pad_towers=True)  # fmt: skip
    assert two.padded == 4
    assert list(attrs(tmp_path / "two.h5")["padded"]) == [2, 2]
    np.testing.assert_array_equal(load(tmp_path / "two.h5")["gTowerEt"][:60], got["gTowerEt"])
    merged = merge_outputs([out, tmp_path / "two.h5"], tmp_path / "merged.h5")
    assert merged.events == 180 and attrs(tmp_path / "merged.h5")["n_padded"] == 6


def test_fixed_array_shorter_than_maps(sbt, root_files, tmp_path: Path):
    path = root_files["bad"]["fixed_short"]
    result = sbt("convert", path, "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX)
    assert_one_line_error(result, "fixed_short.root", "1000 towers", "1184", "--pad-towers")
    result = sbt("convert", path, "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX, "--pad-towers")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(load(tmp_path / "out.h5")["gTowerEt"], _padded_expectation(root_files, list(root_files["full"][:, :1000])))
    assert attrs(tmp_path / "out.h5")["n_padded"] == 60


@pytest.mark.parametrize("which, typename", [("vec_double", "std::vector<double>"), ("vec_int", "std::vector<int32_t>")])
def test_vector_of_another_element_type(sbt, root_files, tmp_path: Path, which: str, typename: str):
    result = sbt("convert", root_files["bad"][which], "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX)
    assert_one_line_error(result, f"{which}.root", "branch 'gTowerEt'", typename)
    assert not list(tmp_path.iterdir())


def test_rho_of_the_wrong_shape(sbt, root_files, tmp_path: Path):
    result = sbt("convert", root_files["bad"]["rho2"], "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX)
    assert_one_line_error(result, "rho2.root", "branch 'Kt4EMTopoEventShape_Density'", "float[2]")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("which, needles", [
    ("nan", ["branch 'gTowerEt'", "entry 23", "NaN or infinite"]),
    ("inf", ["branch 'gTowerEt'", "entry 5", "NaN or infinite"]),
    ("rho_nan", ["branch 'Kt4EMTopoEventShape_Density'", "entry 9", "NaN or infinite"]),
])  # fmt: skip
def test_non_finite_is_refused(sbt, root_files, tmp_path: Path, which: str, needles: list[str]):
    bad, good = root_files["bad"][which], root_files["good"][("vector", "zlib")][0]
    result = sbt("convert", good, bad, "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX, "--workers", "1")
    assert_one_line_error(result, f"{which}.root", *needles)
    assert not list(tmp_path.iterdir())
    result = sbt("convert", good, bad, "-o", tmp_path / "out.h5", "--eta-max", ETA_MAX, "--skip-bad")
    assert result.returncode == EXIT_SKIPPED_BAD, result.stderr
    assert f"{which}.root" in result.stdout
    assert load(tmp_path / "out.h5")["gTowerEt"].shape[0] == FILES[0][1]
    assert attrs(tmp_path / "out.h5")["n_skipped"] == 1


def test_nan_outside_the_kept_towers_is_not_read(root_files, tmp_path: Path):
    result = convert([root_files["bad"]["nan_outside"]], tmp_path / "out.h5", eta_max=ETA_MAX, workers=1)
    assert result.events == 60
    got = load(tmp_path / "out.h5")["gTowerEt"]
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, root_files["images"])


def test_uproot_jagged_arrays_round_trip(gfex_signal, tmp_path: Path):
    """Counted float[n] arrays (what uproot writes for jagged data: no header per entry) take the same path; no ROOT needed."""
    from sbt_batch.convert.samples import embed_hdf5

    (path,) = embed_hdf5(gfex_signal[1], tmp_path, events=90, basket_events=40, layout="jagged")
    with uproot.open(path) as f:
        layout = tower_layout(f["mytree"]["gTowerEt"])
        assert layout.variable and layout.header == 0
    convert([path], tmp_path / "out.h5", eta_max=ETA_MAX, workers=1)
    images, rho = read_hdf5_images(gfex_signal[1])
    got = load(tmp_path / "out.h5")
    np.testing.assert_array_equal(got["gTowerEt"], images[:90])
    np.testing.assert_array_equal(got["offlineRho"], rho[:90])



@pytest.mark.parametrize("dtype", [">f4", "<f4", ">f8"])
def test_first_nonfinite_in_either_byte_order(dtype: str):
    block = np.random.default_rng(0).normal(size=(300, 50)).astype(dtype) * np.float32(3e37)
    assert first_nonfinite(block) is None
    block[211, 7] = -np.inf
    block[250, 0] = np.nan
    assert first_nonfinite(block) == 211
    assert first_nonfinite(block[:, 0]) == 250


def test_sample_ntuples_layout_option(sbt, tmp_path: Path):
    result = sbt("sample-ntuples", tmp_path / "j", "--kind", "signal", "--events", "30", "--layout", "jagged")
    assert result.returncode == 0, result.stderr
    with uproot.open(tmp_path / "j" / "signal_000.root") as f:
        assert tower_layout(f["mytree"]["gTowerEt"]).variable and tower_layout(f["maps"]["gTowerEta"]).variable
    assert convert([tmp_path / "j" / "signal_000.root"], tmp_path / "j.h5", workers=1).events == 30
    assert_one_line_error(sbt("sample-ntuples", tmp_path / "k", "--kind", "signal", "--layout", "vector"), "--layout", "fixed, jagged")
