"""The kinematic classifier: inputs (CSV, HDF5, ROOT), scalers, bad input, weighted training, repeats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_sbt

from sbt_batch.common.errors import EXIT_INCOMPLETE, UserError
from sbt_batch.tabular.columns import Columns
from sbt_batch.tabular.data import load_datasets, load_table, training_weights, write_table
from sbt_batch.tabular.repeats import collect_repeats, trimmed_stats
from sbt_batch.tabular.sample import generate
from sbt_batch.tabular.scalers import fit_scaler, load_scaler
from sbt_batch.tabular.sensitivity import binned_sensitivity

N_EVENTS = 4000


@pytest.fixture(scope="module")
def events() -> dict[str, np.ndarray]:
    return generate(N_EVENTS, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, events) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("kin")
    out = {}
    for suffix in ("csv", "h5", "root"):
        out[suffix] = folder / f"vhbb.{suffix}"
        write_table(out[suffix], events)
    return out


def bad_csv(tmp_path: Path, events: dict[str, np.ndarray], **changes) -> Path:
    data = {k: v.copy() for k, v in events.items()}
    for name, value in changes.items():
        if value is None:
            del data[name]
        else:
            data[name] = value(data)
    path = tmp_path / "bad.csv"
    write_table(path, data)
    return path


# --- data -------------------------------------------------------------------------------------


def test_generated_sample_is_vhbb_like(events):
    sig = events["Class"] == 1
    assert set(events["sample"]) == {"ZvvH125", "ttbar", "Wjets", "Zjets", "diboson"}
    assert 115 < np.median(events["mBB"][sig]) < 130  # Higgs peak
    assert np.median(events["mBB"][events["sample"] == "diboson"]) == pytest.approx(91, abs=5)
    assert (events["EventWeight"] < 0).any() and (events["EventWeight"][sig] > 0).all()
    assert np.all(events["MET"] >= 150)


def test_csv_hdf5_root_load_the_same_table(files, events):
    tables = {k: load_table(p, Columns()) for k, p in files.items()}
    expected = np.column_stack([events[v] for v in ("dRBB", "mBB", "MET", "Mtop", "pTV")])
    for kind, table in tables.items():
        assert table.x.shape == (N_EVENTS, 5), kind
        assert np.allclose(table.x, expected, rtol=1e-6), kind
        assert np.array_equal(table.y, events["Class"]), kind
        assert np.allclose(table.physics_weight, events["EventWeight"] * events["post_fit_weight"], rtol=1e-6), kind
        assert list(table.sample[:5]) == list(events["sample"][:5]), kind


def test_hdf5_compound_dataset_and_custom_columns(tmp_path, events):
    import h5py

    names = ["mBB", "pTV", "Class", "EventWeight"]
    rec = np.zeros(N_EVENTS, dtype=[(n, "f8") for n in names])
    for n in names:
        rec[n] = events[n]
    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("events/table", data=rec)
    cols = Columns(variables="mBB,pTV", training_weight="none", post_fit_weight="none", sample="none")
    table = load_table(path, cols, key="events/table")
    assert table.x.shape == (N_EVENTS, 2)
    assert np.all(table.training_weight == 1) and np.allclose(table.physics_weight, events["EventWeight"])
    assert set(table.sample) == {"signal", "background"}


def test_root_file_with_two_trees_needs_tree(tmp_path, events):
    import uproot

    path = tmp_path / "two.root"
    with uproot.recreate(path) as fh:
        for name in ("Nominal", "Other"):
            fh.mktree(name, {"mBB": np.float64, "Class": np.int32})
            fh[name].extend({"mBB": events["mBB"], "Class": events["Class"].astype(np.int32)})
    cols = Columns(variables=["mBB"], training_weight=None, event_weight=None, post_fit_weight=None, sample=None)
    with pytest.raises(UserError, match="give --tree"):
        load_table(path, cols)
    assert len(load_table(path, cols, tree="Other")) == N_EVENTS


def test_split_is_seeded_and_test_weights_scaled(files):
    a = load_datasets(Columns(), data=[files["h5"]], split=(0.5, 0.25, 0.25), seed=1)
    b = load_datasets(Columns(), data=[files["h5"]], split=(0.5, 0.25, 0.25), seed=1)
    c = load_datasets(Columns(), data=[files["h5"]], split=(0.5, 0.25, 0.25), seed=2)
    assert np.array_equal(a.split["test"], b.split["test"]) and not np.array_equal(a.split["test"], c.split["test"])
    assert sorted(np.concatenate(list(a.split.values()))) == list(range(N_EVENTS))
    full = load_table(files["h5"], Columns())
    # the test split carries the whole data set's yield on average (scaled by N / N_test = 4)
    assert a.test_scale == pytest.approx(4.0)
    assert a.test.physics_weight.sum() == pytest.approx(full.physics_weight.sum(), rel=0.15)


def test_negative_training_weights_modes(files):
    table = load_table(files["h5"], Columns())
    assert (table.training_weight < 0).any()
    for mode in ("abs", "zero", "keep"):
        w = training_weights(table, mode)
        assert w[table.y == 1].sum() == pytest.approx(w[table.y == 0].sum())  # balanced classes
        assert w.sum() == pytest.approx(len(table))
        assert (w < 0).any() == (mode == "keep")
    assert np.all(training_weights(table, "zero")[table.training_weight < 0] == 0)


# --- scalers ----------------------------------------------------------------------------------


def test_scalers_fit_on_train_only(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal([10, -5], [2, 0.5], size=(1000, 2))
    other = train * 3 + 100  # val/test data outside the train range stay outside
    for kind, lo, hi in (("minmax", 0, 1), ("norm", -1, 1)):
        sc = fit_scaler(kind, train, ["a", "b"])
        z = sc.transform(train)
        assert np.allclose(z.min(axis=0), lo) and np.allclose(z.max(axis=0), hi)
        assert (sc.transform(other).max(axis=0) > hi).all()
    sc = fit_scaler("standard", train, ["a", "b"])
    z = sc.transform(train)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-12) and np.allclose(z.std(axis=0), 1)
    sc.save(tmp_path / "scaler.json")
    back = load_scaler(tmp_path / "scaler.json")
    assert np.allclose(back.transform(other), sc.transform(other))
    assert np.allclose(back.inverse(back.transform(other)), other)
    const = fit_scaler("minmax", np.ones((5, 1)))
    assert np.all(np.isfinite(const.transform(np.ones((2, 1)))))


# --- repeats summary --------------------------------------------------------------------------


def write_repeat(run: Path, index: int, value: float) -> None:
    (run / f"repeat-{index}").mkdir(parents=True, exist_ok=True)
    (run / f"repeat-{index}" / "sensitivity.json").write_text(
        json.dumps({"repeat": index, "seed": 100 + index, "sensitivity": value, "error": 0.1, "auc": 0.8, "n_bins": 19})
    )


def test_trimmed_stats_by_hand():
    mean, std, dropped = trimmed_stats([4.0, 1.0, 3.0, 10.0, 2.0], drop=1)
    assert mean == pytest.approx(3.0) and std == pytest.approx(1.0)
    assert dropped == [False, True, False, True, False]
    assert trimmed_stats([2.0, 4.0], drop=0)[:2] == (3.0, pytest.approx(2**0.5))
    with pytest.raises(UserError, match="at least 3 repeats"):
        trimmed_stats([1.0, 2.0], drop=1)


def test_collect_repeats_and_summarize_cli(tmp_path):
    run = tmp_path / "run"
    for i, v in enumerate([4.0, 1.0, 3.0, 10.0, 2.0]):
        write_repeat(run, i, v)
    summary = collect_repeats(run, drop=1, plots=False)
    assert summary["mean"] == pytest.approx(3.0) and summary["std"] == pytest.approx(1.0)
    assert [r["repeat"] for r in summary["repeats"]] == [0, 1, 2, 3, 4]
    assert json.loads((run / "repeats.json").read_text())["n_kept"] == 3

    result = run_sbt("summarize-repeats", run, "--drop", "2")
    assert result.returncode == 0, result.stderr
    assert "3.0000 ± 0.0000" in result.stdout and "dropped" in result.stdout
    assert (run / "plots" / "sensitivity-repeats.png").is_file() and (run / "plots" / "sensitivity-repeats.pdf").is_file()

    with pytest.raises(UserError) as info:
        collect_repeats(run, expected=7, plots=False)
    assert info.value.exit_code == EXIT_INCOMPLETE
    result = run_sbt("summarize-repeats", run, "--expected", "7")
    assert result.returncode == EXIT_INCOMPLETE
    assert_one_line_error(result, "2 repeat(s) without sensitivity.json", "repeat 5,6")
    assert collect_repeats(run, expected=7, allow_missing=True, plots=False)["missing"] == [5, 6]


# --- bad input through the CLI (fails before TensorFlow is imported) ---------------------------


@pytest.mark.parametrize(
    "change,needles",
    [
        ({"mBB": None}, ("bad.csv", "missing column 'mBB'")),
        ({"post_fit_weight": None}, ("missing column 'post_fit_weight'",)),
        ({"MET": lambda d: np.where(np.arange(len(d["MET"])) == 7, np.nan, d["MET"])}, ("column 'MET'", "NaN/inf", "event 7")),
        ({"EventWeight": lambda d: np.where(np.arange(len(d["MET"])) == 3, np.inf, d["EventWeight"])}, ("column 'EventWeight'", "NaN/inf")),
        ({"Class": lambda d: np.zeros_like(d["Class"])}, ("column 'Class'", "no signal events")),
        ({"Class": lambda d: d["Class"] * 2}, ("column 'Class'", "must be 0 (background) or 1 (signal)")),
    ],
)
def test_bad_input_one_line_error(tmp_path, events, change, needles):
    path = bad_csv(tmp_path, events, **change)
    result = run_sbt("train-tabular", "--data", path, "--out", tmp_path / "run", "--epochs", "1")
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--scaler", "robust"], ("--scaler", "robust")),
        (["--split", "0.5,0.5"], ("--split",)),
        (["--units", "64,32"], ("--units", "one value or 3")),
        (["--activation", "relux"], ("--activation", "relux")),
        (["--optimizer", "rmsprop"], ("--optimizer",)),
        (["--variables", "mBB,mbb_typo"], ("missing column 'mbb_typo'",)),
        (["--repeats", "2"], ("--repeats", "--drop 1")),
        (["--train", "x.csv"], ("either --data",)),
    ],
)
def test_bad_options_one_line_error(tmp_path, files, extra, needles):
    result = run_sbt("train-tabular", "--data", files["csv"], "--out", tmp_path / "run", "--epochs", "1", *extra)
    assert_one_line_error(result, *needles)


def test_bad_config_key_and_missing_inputs(tmp_path, files):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"data: [{files['csv']}]\nepocs: 3\n")
    assert_one_line_error(run_sbt("train-tabular", "--config", spec, "--out", tmp_path / "r"), "unknown key 'epocs'", "epochs")
    assert_one_line_error(run_sbt("train-tabular", "--out", tmp_path / "r"), "--data")
    assert_one_line_error(run_sbt("train-tabular", "--train", files["csv"], "--out", tmp_path / "r"), "--val")
    assert_one_line_error(run_sbt("train-tabular", "--data", tmp_path / "nope.csv", "--out", tmp_path / "r"), "nope.csv", "file not found")
    assert_one_line_error(run_sbt("sample-kinematics", tmp_path / "x.txt"), "x.txt", "unknown file type")
    assert_one_line_error(run_sbt("train-tabular", "--data", files["h5"], "--hdf5-key", "nope", "--out", tmp_path / "r"), "no group or dataset 'nope'")


def test_malformed_files_one_line_error(tmp_path, files, events):
    lines = files["csv"].read_text().splitlines()
    text = tmp_path / "text.csv"
    text.write_text("\n".join([lines[0], lines[1].replace(lines[1].split(",")[1], "abc", 1), *lines[2:]]) + "\n")
    assert_one_line_error(run_sbt("train-tabular", "--data", text, "--out", tmp_path / "r"), "column 'mBB' line 2", "not a number")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join([lines[0], lines[1] + ",7", *lines[2:]]) + "\n")
    assert_one_line_error(run_sbt("train-tabular", "--data", ragged, "--out", tmp_path / "r"), "line 2 has 11 fields")
    import uproot

    two = tmp_path / "two.root"
    with uproot.recreate(two) as fh:
        for name in ("a", "b"):
            fh.mktree(name, {"mBB": np.float64})
            fh[name].extend({"mBB": events["mBB"]})
    assert_one_line_error(run_sbt("train-tabular", "--data", two, "--out", tmp_path / "r"), "give --tree", "a, b")
    assert not (tmp_path / "r").exists()


# --- training ---------------------------------------------------------------------------------


def test_weighted_training_repeats_reach_sensible_sensitivity(tmp_path, files):
    from sbt_batch.tabular.train import resolve_config, train_tabular

    cfg = resolve_config({"data": [str(files["h5"])], "epochs": 6, "batch_size": 128, "repeats": 3, "seed": 5, "units": "32", "layers": 2,
                          "plots": False})  # plots: checked once in the CLI test below (matplotlib is slow here)
    summary = train_tabular(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for i in range(3):
        rep = run / f"repeat-{i}"
        for name in ("model.keras", "history.json", "config.yaml", "split.npz", "scaler.json", "sensitivity.json", "predictions.npz",
                     "checkpoints/epoch-0006.npz", "logs/train.log"):
            assert (rep / name).is_file(), f"{rep}/{name}"
        assert json.loads((rep / "sensitivity.json").read_text())["seed"] == 5 + i
    assert (run / "repeats.json").is_file()
    assert summary["n_repeats"] == 3 and summary["n_kept"] == 1

    # the scaler was fit on the train split only (the split is shared by all repeats)
    split = np.load(run / "repeat-0" / "split.npz")
    assert np.array_equal(split["test"], np.load(run / "repeat-2" / "split.npz")["test"])
    table = load_table(files["h5"], Columns())
    scaler = load_scaler(run / "repeat-0" / "scaler.json")
    assert np.allclose(scaler.offset, table.x[split["train"]].mean(axis=0))
    assert not np.allclose(scaler.offset, table.x.mean(axis=0), rtol=1e-6)

    # sensible: far better than a random classifier on the same test events
    test = table.subset(split["test"])
    w = test.physics_weight * (N_EVENTS / len(split["test"]))
    random_z = binned_sensitivity(np.random.default_rng(0).random(len(test)), test.y == 1, w).sensitivity
    values = [r["sensitivity"] for r in summary["repeats"]]
    assert min(values) > 1.5 * random_z, (values, random_z)
    assert min(r["auc"] for r in summary["repeats"]) > 0.8
    history = json.loads((run / "repeat-0" / "history.json").read_text())
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_cli_single_repeat_index_as_array_task(tmp_path, files):
    out = tmp_path / "batchrun"
    result = run_sbt(
        "train-tabular", "--data", files["root"], "--out", out, "--repeat-index", "2", "--seed", "10",
        "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05", "--scaler", "norm", "--layers", "2", "--units", "16,8",
        "--activation", "tanh,relu",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads((out / "repeat-2" / "sensitivity.json").read_text())
    assert data["repeat"] == 2 and data["seed"] == 12 and data["sensitivity"] > 0
    assert load_scaler(out / "repeat-2" / "scaler.json").kind == "norm"
    for stem in ("nn-output", "training"):
        for ext in ("png", "pdf"):
            assert (out / "repeat-2" / "plots" / f"{stem}.{ext}").stat().st_size > 1000
    assert "sensitivity" in result.stdout


def test_job_spec_in_repo_is_valid():
    from sbt_batch.common.config import load_yaml
    from sbt_batch.tabular.train import resolve_config

    cfg = resolve_config(load_yaml(Path(__file__).resolve().parents[1] / "jobs" / "train-kinematics.yaml"))
    assert cfg.repeats == 5 and cfg.columns["variables"] == ["dRBB", "mBB", "MET", "Mtop", "pTV"]
