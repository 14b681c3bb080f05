"""Dataset assembly: files, rows, split, normalization, streaming order (real gFEX files + tiny HDF5s)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from sbt_batch.cnn import prepare as D
from sbt_batch.cnn import stream as DS
from sbt_batch.common.errors import UserError


def write_h5(path: Path, x: np.ndarray) -> Path:
    """A minimal convert-style file with gTowerEt."""
    with h5py.File(path, "w") as f:
        f.create_dataset("gTowerEt", data=x.astype(np.float32), chunks=(min(len(x), 16) or 1, *x.shape[1:]))
        f.create_dataset("offlineRho", data=np.zeros(len(x), np.float32))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    sig = [write_h5(tmp_path / f"s{i}.h5", rng.normal(1000, 500, (40, 6, 32))) for i in range(2)]
    bkg = [write_h5(tmp_path / f"b{i}.h5", rng.normal(0, 500, (30, 6, 32))) for i in range(2)]
    for p in sig + bkg:  # last row zero in every event, like the real data's last two rows
        with h5py.File(p, "a") as f:
            x = f["gTowerEt"][:]
            x[:, 5] = 0
            f["gTowerEt"][:] = x
    return sig, bkg


def test_real_files_open_and_auto_rows(gfex_signal: list[Path], gfex_background: list[Path]) -> None:
    sources = D.open_sources(gfex_signal, gfex_background)
    assert [s.label for s in sources] == [1] * 4 + [0] * 4
    assert all(s.shape == (28, 32) and s.n == 250 for s in sources)
    index = D.EventIndex(sources)
    assert index.n == 2000 and index.labels.sum() == 1000
    assert D.find_nonzero_rows(sources) == list(range(26))  # the last two eta rows are zero everywhere


def test_bad_files(tmp_path: Path, tiny: tuple[list[Path], list[Path]]) -> None:
    sig, bkg = tiny
    with pytest.raises(UserError, match="file not found"):
        D.open_sources([tmp_path / "nope.h5"], bkg)
    other = write_h5(tmp_path / "other.h5", np.ones((5, 7, 32)))
    with pytest.raises(UserError, match="image shape 7x32 differs"):
        D.open_sources(sig, [other])
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        D.open_sources(sig, [tmp_path / "text.h5"])
    with h5py.File(tmp_path / "nods.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(UserError, match="no 'gTowerEt' dataset"):
        D.open_sources(sig, [tmp_path / "nods.h5"])
    with pytest.raises(UserError, match="no file matches"):
        D.expand_paths([str(tmp_path / "*.nothing")], "--signal")
    assert D.expand_paths([f"{tmp_path}/s*.h5"], "--signal") == [str(p) for p in sig]


def test_rows_and_split_parsing() -> None:
    assert D.parse_rows("0:26", 28) == list(range(26))
    assert D.parse_rows("auto", 28) is None
    assert D.rows_to_spec(list(range(3, 9))) == "3:9"
    for bad in ("a:b", "0:40", "5:5"):
        with pytest.raises(UserError, match="--rows"):
            D.parse_rows(bad, 28)
    assert D.parse_split("0.5,0.45,0.05") == (0.5, 0.45, 0.05)
    for bad in ("0.5,0.6,0.1", "1,2", "x,y,z"):
        with pytest.raises(UserError, match="--split"):
            D.parse_split(bad)


def test_split_is_seeded_disjoint_and_complete() -> None:
    a = D.make_split(2000, (0.5, 0.45, 0.05), seed=3)
    b = D.make_split(2000, (0.5, 0.45, 0.05), seed=3)
    c = D.make_split(2000, (0.5, 0.45, 0.05), seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    assert [len(a[k]) for k in ("train", "val", "test")] == [1000, 900, 100]
    assert len(np.unique(np.concatenate(list(a.values())))) == 2000
    with pytest.raises(UserError, match="empty after filtering"):
        D.make_split(3, (0.5, 0.45, 0.05), seed=1)


def test_split_roundtrip(tmp_path: Path, tiny: tuple[list[Path], list[Path]]) -> None:
    sources = D.open_sources(*tiny)
    split = D.make_split(140, (0.5, 0.3, 0.2), 1)
    D.save_split(tmp_path / "split.npz", split, sources)
    back, files = D.load_split(tmp_path / "split.npz")
    assert all(np.array_equal(back[k], split[k]) for k in split)
    assert [f["label"] for f in files] == [1, 1, 0, 0]


def test_normalizations_and_negative_et() -> None:
    x = np.tile(np.array([-2000.0, 0.0, 1000.0, 3000.0], np.float32), (1, 2, 8))  # (1, 2, 32)
    p = D.Preprocess([0, 1], "log1p")
    out = p.apply(x)
    assert out.shape == (1, 2, 32, 1) and out.min() == 0.0  # negative ET clipped to 0 first
    np.testing.assert_allclose(out[0, 0, 2:4, 0], np.log1p([1.0, 3.0]), rtol=1e-6)
    keep = D.Preprocess([0, 1], "log1p", negative="keep").apply(x)
    np.testing.assert_allclose(keep[0, 0, 0, 0], -np.log1p(2.0), rtol=1e-6)  # symmetric log
    mx = D.Preprocess([0, 1], "max").apply(x)
    assert mx.max() == 1.0 and mx.min() == 0.0
    st = D.Preprocess([0, 1], "standardize", mean=1000.0, std=500.0).apply(x)
    np.testing.assert_allclose(st[0, 0, :4, 0], [-2.0, -2.0, 0.0, 4.0])
    assert D.Preprocess([0, 1], "none", negative="keep").apply(x)[0, 0, 0, 0] == -2000.0
    with pytest.raises(UserError, match="--norm"):
        D.check_preprocess_options("zscore", "clip")


def test_rgb_matches_matplotlib_imsave(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.random.default_rng(1).gamma(1.0, 2000.0, (3, 26, 32)).astype(np.float32)
    ours = D.to_rgb_uint8(x)
    for i in range(3):
        plt.imsave(tmp_path / "a.png", x[i], cmap="viridis")
        theirs = (plt.imread(tmp_path / "a.png")[..., :3] * 255).round().astype(np.uint8)
        assert np.array_equal(ours[i], theirs)
    rgb = D.Preprocess(list(range(26)), "none", rgb=True).apply(x)
    assert rgb.shape == (3, 26, 32, 3) and 0.0 <= rgb.min() and rgb.max() <= 1.0


def test_stream_reads_match_files_and_cache(tiny: tuple[list[Path], list[Path]]) -> None:
    sources = D.open_sources(*tiny)
    index = D.EventIndex(sources)
    stream = DS.EventStream(index, D.Preprocess([0, 2, 3], "none", negative="keep"))
    ids = np.array([139, 0, 75, 3, 41, 40, 100, 2])
    raw = stream.read_raw(ids)
    full = np.concatenate([h5py.File(p)["gTowerEt"][:] for p in tiny[0] + tiny[1]])
    np.testing.assert_array_equal(raw, full[ids][:, [0, 2, 3]])
    direct = stream.read(ids)
    stream.load_cache(np.arange(index.n))
    np.testing.assert_array_equal(stream.read(ids), direct)
    stream.close()


def test_epoch_order_is_a_deterministic_permutation() -> None:
    ids = np.arange(0, 20000, 2)
    a = DS.epoch_order(ids, seed=1, epoch=0)
    assert np.array_equal(a, DS.epoch_order(ids, seed=1, epoch=0))
    assert np.array_equal(np.sort(a), ids)
    assert not np.array_equal(a, DS.epoch_order(ids, seed=1, epoch=1))
    assert not np.array_equal(a, DS.epoch_order(ids, seed=2, epoch=0))


def test_balance() -> None:
    labels = np.array([1] * 10 + [0] * 30)
    b = DS.Balance.from_labels("weights", labels)
    w = b.weights(labels)
    assert w[:10].sum() == pytest.approx(w[10:].sum()) and w.mean() == pytest.approx(1.0)
    over = DS.Balance.from_labels("oversample", labels)
    ids = over.epoch_ids(np.arange(40), labels, seed=1, epoch=0)
    assert (labels[ids] == 1).sum() == (labels[ids] == 0).sum() == 30
    with pytest.raises(UserError, match="--balance"):
        DS.Balance.from_labels("smote", labels)


def test_tf_dataset_follows_order(tiny: tuple[list[Path], list[Path]]) -> None:
    pytest.importorskip("tensorflow")
    sources = D.open_sources(*tiny)
    index = D.EventIndex(sources)
    stream = DS.EventStream(index, D.Preprocess(list(range(5)), "log1p"))
    order = DS.epoch_order(np.arange(index.n), 7, 0, window=16)
    batches = list(DS.make_tf_dataset(stream, order, batch_size=8, window_batches=2, parallel=3))
    assert [len(b[1]) for b in batches] == [8] * 17 + [4]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(x, stream.read(order))
    np.testing.assert_array_equal(y, index.labels[order])


def test_standardize_stats_from_train_split(tiny: tuple[list[Path], list[Path]]) -> None:
    sources = D.open_sources(*tiny)
    stream = DS.EventStream(D.EventIndex(sources), D.Preprocess(list(range(5)), "standardize"))
    ids = np.arange(10, 120)
    x = np.maximum(stream.read_raw(ids), 0).astype(np.float64)
    mean, std = DS.compute_standardize(stream, ids)
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std())


def test_et_over_rho_channel_is_normalized_on_its_own() -> None:
    x = np.tile(np.array([-2000.0, 0.0, 1000.0, 3000.0], np.float32), (3, 2, 8))  # (3, 2, 32)
    rho = np.array([1000.0, 0.0, np.nan], np.float32)  # the last two: no pile-up estimate
    p = D.Preprocess([0, 1], "standardize", mean=1000.0, std=500.0, inputs="et,et_over_rho", mean2=1.0, std2=2.0)
    assert p.uses_rho and p.input_shape == (2, 32, 2)
    out = p.apply(x, rho)
    assert out.shape == (3, 2, 32, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], D.Preprocess([0, 1], "standardize", mean=1000.0, std=500.0).apply(x)[..., 0])
    np.testing.assert_allclose(out[0, 0, :4, 1], ([0.0, 0.0, 1.0, 3.0] - np.float32(1.0)) / 2.0)  # clip, / rho, own stats
    np.testing.assert_allclose(out[1:, ..., 1], -0.5)  # rho <= 0 or NaN: a zero ET / rho channel before standardize
    logs = D.Preprocess([0, 1], "log1p", inputs="et,et_over_rho").apply(x, rho)
    np.testing.assert_allclose(logs[0, 0, 2:4, 1], np.log1p([1.0, 3.0]), rtol=1e-6)  # log1p of the ratio, no MeV scale
    with pytest.raises(UserError, match="offlineRho"):
        p.apply(x)
    assert D.check_inputs(" et , et_over_rho", False) == "et,et_over_rho"
    with pytest.raises(UserError, match="--inputs: unknown inputs 'rho'"):
        D.check_inputs("rho", False)
    with pytest.raises(UserError, match="--rgb"):
        D.check_inputs("et,et_over_rho", True)
    assert D.Preprocess.from_dict({"rows": "0:2", "norm": "none"}).inputs == "et"  # a run from before --inputs


def test_stream_reads_rho_and_standardizes_both_channels(tiny: tuple[list[Path], list[Path]]) -> None:
    sig, bkg = tiny
    for i, p in enumerate(sig + bkg):
        with h5py.File(p, "a") as f:
            f["offlineRho"][:] = 500.0 * (i + 1)
    sources = D.open_sources(sig, bkg)
    D.check_rho(sources)
    index = D.EventIndex(sources)
    stream = DS.EventStream(index, D.Preprocess(list(range(5)), "standardize", inputs="et,et_over_rho"))
    ids = np.array([139, 0, 75, 41, 5])
    rho = stream.read_rho(ids)
    files, _ = index.locate(ids)
    np.testing.assert_array_equal(rho, 500.0 * (files + 1))
    stream.prep.mean, stream.prep.std = DS.compute_standardize(stream, np.arange(index.n))
    stream.prep.mean2, stream.prep.std2 = DS.compute_standardize_over_rho(stream, np.arange(index.n))
    x = stream.read(np.arange(index.n))
    assert x.shape == (index.n, 5, 32, 2)
    np.testing.assert_allclose(x.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.reshape(-1, 2).std(axis=0), 1.0, rtol=1e-4)
    stream.load_cache(ids)
    np.testing.assert_array_equal(stream.read(ids), x[ids])
    stream.close()
    with h5py.File(bkg[0], "a") as f:
        del f["offlineRho"]
    with pytest.raises(UserError, match="no 'offlineRho' dataset"):
        D.check_rho(D.open_sources(sig, bkg))
