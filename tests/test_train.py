"""Training on the real gFEX events: AUC, exact resume, SIGTERM -> checkpoint + exit 75, config and CLI errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, run_sbt

from sbt_batch.cnn.config import TrainConfig, resolve_config
from sbt_batch.cnn.train import train
from sbt_batch.common.errors import EXIT_REQUEUE, UserError


def _weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(v) for v in keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def test_2c2m_reaches_auc_085_on_unseen_events(tmp_path: Path, gfex_signal, gfex_background) -> None:
    """Seed 1, split 0.5/0.1/0.4: 1000 train events, AUC measured on the 800 test events never trained on."""
    from sbt_batch.cnn.evaluate import evaluate_run
    from sbt_batch.cnn.prepare import load_split

    out = tmp_path / "run"
    result = train(signal=gfex_signal, background=gfex_background, model="2c2m", out=str(out), epochs=6,
                   seed=1, split="0.5,0.1,0.4", progress=False)
    assert len(result.history) == 6
    for name in ("model.keras", "history.json", "config.yaml", "split.npz", "logs/train.log", "checkpoints/epoch-0006.npz"):
        assert (out / name).exists(), name
    split, _ = load_split(out / "split.npz")
    assert len(split["test"]) == 800 and not set(split["test"]) & set(split["train"]) | set(split["val"]) & set(split["test"])
    metrics = evaluate_run(out, plots=False)
    assert metrics["events"] == 800
    assert metrics["auc"] >= 0.85, metrics


def _small(gfex_signal, gfex_background, out: Path, **kw):  # type: ignore[no-untyped-def]
    opts = dict(signal=gfex_signal, background=gfex_background, out=str(out), max_events=120, split="0.6,0.2,0.2",
                batch_size=16, seed=5, progress=False)
    opts.update(kw)
    return train(**opts)


def test_resume_gives_identical_weights(tmp_path: Path, gfex_signal, gfex_background) -> None:
    full = _small(gfex_signal, gfex_background, tmp_path / "full", model="2c2m-dropout", epochs=2, lr_schedule="exp", lr=3e-3)
    part = _small(gfex_signal, gfex_background, tmp_path / "part", model="2c2m-dropout", epochs=1, lr_schedule="exp", lr=3e-3)
    assert len(part.history) == 1
    resumed = train(resume=str(tmp_path / "part"), epochs=2)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    _assert_same_weights(tmp_path / "full", tmp_path / "part")
    with pytest.raises(UserError, match="cannot change when resuming"):
        train(resume=str(tmp_path / "part"), model="1c")


def test_sigterm_saves_checkpoint_exits_75_and_resume_matches(tmp_path: Path, gfex_signal, gfex_background) -> None:
    """Real subprocess: SIGTERM mid-training -> checkpoint, exit 75; resuming ends with the uninterrupted weights."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "sbt_batch", "train", "--model", "2c2m", "--out", str(run), "--epochs", "40",
            "--max-events", "300", "--split", "0.8,0.1,0.1", "--batch-size", "8", "--seed", "9", "--no-progress"]
    for f in gfex_signal:
        args += ["--signal", str(f)]
    for f in gfex_background:
        args += ["--background", str(f)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    log = run / "logs" / "train.log"
    deadline = time.monotonic() + 240
    while not (log.exists() and log.read_text().strip()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, err
    assert "epoch 1/40 loss" in err  # one summary line per epoch
    assert_one_line_error(subprocess.CompletedProcess(args, proc.returncode, out, err), "SIGTERM", "--resume")
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.npz"))
    assert ckpts and not (run / "model.keras").exists()
    done = len(log.read_text().splitlines())
    assert done < 4, "training finished too many epochs before SIGTERM took effect"
    train(resume=str(run), epochs=4, progress=False)
    ref = tmp_path / "ref"
    train(signal=gfex_signal, background=gfex_background, model="2c2m", out=str(ref), epochs=4, max_events=300,
          split="0.8,0.1,0.1", batch_size=8, seed=9, progress=False)
    _assert_same_weights(run, ref)


def test_early_stopping_and_keep_best(tmp_path: Path, gfex_signal, gfex_background) -> None:
    res = _small(gfex_signal, gfex_background, tmp_path / "es", model="1c", epochs=6, early_stopping=1, lr=5.0)
    assert len(res.history) < 6
    best = _small(gfex_signal, gfex_background, tmp_path / "kb", model="1c", epochs=3, keep_best=True)
    with np.load(tmp_path / "kb" / "checkpoints" / "best.npz") as z:
        kernel = z["m0"]
    np.testing.assert_array_equal(_weights(tmp_path / "kb")[0], kernel)
    assert best.history[-1]["epoch"] == 3


def test_yaml_spec_has_every_option_and_flags_override(tmp_path: Path) -> None:
    import inspect

    import yaml

    from sbt_batch.cli.train import train_cmd

    spec = yaml.safe_load((REPO / "jobs" / "train-gfex.yaml").read_text())
    assert set(spec) == set(TrainConfig.keys())
    launch_only = {"config", "ranks", "launcher"}  # how to start the ranks, not what to train (docs/horovod.md)
    assert set(inspect.signature(train_cmd).parameters) - launch_only == set(TrainConfig.keys())
    (tmp_path / "s.yaml").write_text("model: 1c\nepochs: 3\nsplit: 0.6,0.2,0.2\n")
    cfg = resolve_config(spec_path=tmp_path / "s.yaml", epochs=7)
    assert (cfg.model, cfg.epochs, cfg.split) == ("1c", 7, "0.6,0.2,0.2")
    (tmp_path / "lr.yaml").write_text("lr: 1e-3\nkeep_best: true\n")  # YAML reads 1e-3 as a string
    assert resolve_config(spec_path=tmp_path / "lr.yaml").lr == 1e-3
    with pytest.raises(UserError, match="--epochs: expected int, got 'ten'"):
        resolve_config(epochs="ten")
    (tmp_path / "bad.yaml").write_text("model: 1c\nepoch: 3\n")
    with pytest.raises(UserError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        resolve_config(spec_path=tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- CLI bad inputs (no TensorFlow)


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, shape in (("empty", (0, 28, 32)), ("wide", (10, 28, 40))):
        paths[name] = tmp_path / f"{name}.h5"
        with h5py.File(paths[name], "w") as f:
            f.create_dataset("gTowerEt", shape=shape, dtype=np.float32)
    return paths


def test_cli_bad_inputs(tmp_path: Path, gfex_signal, gfex_background, odd_files) -> None:
    sig, bkg = str(gfex_signal[0]), str(gfex_background[0])
    out = str(tmp_path / "run")
    r = run_sbt("train", "--signal", str(tmp_path / "missing.h5"), "--background", bkg, "--out", out)
    assert_one_line_error(r, "missing.h5", "file not found")
    r = run_sbt("train", "--signal", sig, "--background", odd_files["wide"], "--out", out)
    assert_one_line_error(r, "wide.h5", "image shape 28x40 differs")
    r = run_sbt("train", "--signal", odd_files["empty"], "--background", bkg, "--out", out)
    assert_one_line_error(r, "no signal events", "empty after filtering")
    r = run_sbt("train", "--signal", sig, "--background", bkg, "--model", "3c3m", "--out", out)
    assert_one_line_error(r, "unknown model '3c3m'")
    (tmp_path / "spec.yaml").write_text(f"signal: [{sig}]\nbackground: [{bkg}]\nbatchsize: 32\n")
    r = run_sbt("train", "--config", tmp_path / "spec.yaml", "--out", out)
    assert_one_line_error(r, "spec.yaml", "unknown key 'batchsize'", "did you mean 'batch_size'")
    r = run_sbt("train", "--resume", tmp_path / "nope")
    assert_one_line_error(r, "run directory not found")
    assert not (tmp_path / "run").exists()


def test_cli_bad_inputs_option(tmp_path: Path, gfex_signal, gfex_background) -> None:
    """--inputs: an unknown value, with --rgb, and files without offlineRho each get one line naming the key or file."""
    sig, bkg = str(gfex_signal[0]), str(gfex_background[0])
    out = str(tmp_path / "run")
    r = run_sbt("train", "--signal", sig, "--background", bkg, "--inputs", "et,rho", "--out", out)
    assert_one_line_error(r, "--inputs: unknown inputs 'et,rho'")
    r = run_sbt("train", "--signal", sig, "--background", bkg, "--inputs", "et,et_over_rho", "--rgb", "--out", out)
    assert_one_line_error(r, "--inputs", "--rgb")
    norho = tmp_path / "norho.h5"
    with h5py.File(norho, "w") as f:
        f.create_dataset("gTowerEt", data=np.ones((10, 28, 32), np.float32))
    r = run_sbt("train", "--signal", sig, "--background", norho, "--inputs", "et,et_over_rho", "--out", out)
    assert_one_line_error(r, "norho.h5", "no 'offlineRho' dataset")
    assert not (tmp_path / "run").exists()
