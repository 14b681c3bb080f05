"""Evaluation metrics (against independent formulas), evaluate/compare outputs and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_sbt

from sbt_batch.cnn import evaluate as E
from sbt_batch.common import metrics as M


def test_roc_auc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300), np.zeros(500)].astype(int)
    scores = np.r_[rng.normal(1, 1, 300), rng.normal(0, 1, 500)].round(1)  # with ties
    fpr, tpr = M.roc_curve(labels, scores)
    s, b = scores[labels == 1], scores[labels == 0]
    mw = (np.sum(s[:, None] > b[None, :]) + 0.5 * np.sum(s[:, None] == b[None, :])) / (len(s) * len(b))
    assert M.auc(fpr, tpr) == pytest.approx(mw, abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)


def test_rejection_and_metrics() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.3, 0.1, 0.05])
    m = M.compute_metrics(labels, scores)
    assert m["accuracy"] == pytest.approx(6 / 8) and m["baseline_error_percent"] == pytest.approx(25.0)
    assert m["rejection_at_50"] == float("inf")  # 2 of 4 signal pass before any background
    assert m["rejection_at_80"] == pytest.approx(2.0)  # 80% needs the cut below 0.3: FPR 0.5
    assert M.compute_metrics(labels, np.where(labels == 1, 0.9, 0.1))["auc"] == 1.0


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, gfex_signal, gfex_background) -> list[Path]:
    from sbt_batch.cnn.train import train

    base = tmp_path_factory.mktemp("runs")
    runs = []
    for model in ("1c", "2c2m"):
        train(signal=gfex_signal, background=gfex_background, model=model, out=str(base / model), epochs=2,
              max_events=200, split="0.5,0.2,0.3", seed=2, progress=False)
        runs.append(base / model)
    return runs


def test_evaluate_writes_metrics_and_plots(two_runs: list[Path], gfex_signal, gfex_background) -> None:
    run = two_runs[1]
    m = E.evaluate_run(run)
    assert m["evaluated_on"] == "test split" and m["events"] == 120
    disk = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "baseline_error_percent", "auc", "rejection_at_50", "rejection_at_80"):
        assert key in disk
    for stem in ("roc", "scores", "loss", "accuracy"):
        assert (run / "eval" / f"{stem}.png").stat().st_size > 0 and (run / "eval" / f"{stem}.pdf").exists()
    files = E.evaluate_run(run, [str(gfex_signal[0])], [str(gfex_background[0])], plots=False)
    assert files["evaluated_on"] == "files" and files["events"] == 500


def test_compare_cli(two_runs: list[Path], tmp_path: Path) -> None:
    for run in two_runs:
        if not (run / "eval" / "metrics.json").exists():
            E.evaluate_run(run, plots=False)
    r = run_sbt("compare", *two_runs, "--out", tmp_path / "cmp")
    assert r.returncode == 0, r.stderr
    assert "1c" in r.stdout and "2c2m" in r.stdout and "AUC" in r.stdout
    for stem in ("roc", "baseline_error"):
        assert (tmp_path / "cmp" / f"{stem}.png").exists() and (tmp_path / "cmp" / f"{stem}.pdf").exists()
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["label"] for r in rows] == ["1c", "2c2m"]


def test_cli_errors(tmp_path: Path) -> None:
    assert_one_line_error(run_sbt("evaluate", tmp_path / "nope"), "run directory not found")
    assert_one_line_error(run_sbt("compare", tmp_path / "nope"), "run directory not found")
