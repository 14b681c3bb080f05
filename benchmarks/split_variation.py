"""Benchmark: how much the test AUC of the real gFEX data moves with the data split alone (issue 15's 0.93 target).

Two figures, both on the 2,000 real events in ../shared with ``split: 0.5,0.1,0.4`` (1,000 / 200 / 800):

- a deterministic reference classifier (logistic regression on 22 tower features: the 16 largest towers, the
  largest 2x2 ... 8x8 window sums, rho and the total ET, all log1p) trained on the train part of each of
  ``--splits`` data splits (``split_seed`` 1..N, the split ``sbt-batch train`` makes) and scored on its test part:
  no seed, no training noise, so its spread is the split's alone;
- the bootstrap standard error of the test AUC of finished runs (``RUN/eval/roc.npz``), given as arguments.

    .venv/bin/python benchmarks/split_variation.py [--splits 20] [RUN ...]

Output: benchmarks/results/split_variation.md.
"""

from __future__ import annotations

import argparse
import glob
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml
from machine import cpu_model

from sbt_batch.cnn import prepare as D
from sbt_batch.cnn.stream import EventStream
from sbt_batch.common.metrics import auc, roc_curve

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "gfex-hdf5"
SPLIT = (0.5, 0.1, 0.4)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The area under the ROC curve, as ``sbt-batch evaluate`` computes it."""
    return auc(*roc_curve(labels, scores))


def load_events() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images in GeV (N, rows, 32; the non-zero rows, as ``train`` crops them), rho in GeV and labels (1 signal)."""
    sources = D.open_sources(sorted(glob.glob(str(DATA / "*ZvvHbb*.hdf5"))), sorted(glob.glob(str(DATA / "*JZ0W*.hdf5"))))
    index = D.EventIndex(sources)
    stream = EventStream(index, D.Preprocess(D.find_nonzero_rows(sources), norm="none"))
    ids = np.arange(index.n)
    try:
        images, rho = stream.read_raw(ids), stream.read_rho(ids)
    finally:
        stream.close()
    return np.maximum(images, 0) / 1000.0, rho / 1000.0, (index.labels == D.SIGNAL).astype(np.int64)


def window_max(images: np.ndarray, k: int) -> np.ndarray:
    """The largest k x k tower sum of each image (phi wraps around)."""
    wrapped = np.concatenate([images, images[:, :, : k - 1]], axis=2)
    c = np.pad(wrapped.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    sums = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return sums.reshape(len(images), -1).max(axis=1)


def tower_features(images: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The reference classifier's 22 features per event, log1p."""
    n = len(images)
    top = -np.sort(-images.reshape(n, -1), axis=1)[:, :16]
    windows = [window_max(images, k) for k in (2, 3, 4, 6, 8)]
    return np.log1p(np.column_stack([top, *windows, rho, images.sum(axis=(1, 2))]))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 30) -> np.ndarray:
    """Weights (with the bias last) of an L2-regularised logistic regression, by Newton's method."""
    a = np.column_stack([x, np.ones(len(x))])
    w = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-a @ w))
        hessian = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, a.T @ (p - y) + l2 * w)
    return w


def reference_aucs(features: np.ndarray, labels: np.ndarray, splits: int) -> list[float]:
    """Test AUC of the reference classifier on split_seed 1..``splits``."""
    out = []
    for seed in range(1, splits + 1):
        split = D.make_split(len(labels), SPLIT, seed)
        train, test = split["train"], split["test"]
        mean, std = features[train].mean(0), features[train].std(0) + 1e-9
        z = (features - mean) / std
        w = fit_logistic(z[train], labels[train])
        out.append(roc_auc(labels[test], np.column_stack([z[test], np.ones(len(test))]) @ w))
    return out


def run_label(run: Path) -> str:
    """'model, split_seed S, seed N' of a run directory, from its config.yaml."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return f"{cfg['model']}, split_seed {cfg.get('split_seed') or cfg['seed']}, seed {cfg['seed']}"


def bootstrap_se(run: Path, draws: int = 2000) -> tuple[float, float, int]:
    """(test AUC, bootstrap standard error, events) of a finished run's eval/roc.npz."""
    with np.load(run / "eval" / "roc.npz") as z:
        labels, scores = z["labels"], z["scores"]
    rng = np.random.default_rng(0)
    picks = (rng.integers(0, len(labels), len(labels)) for _ in range(draws))
    return roc_auc(labels, scores), float(np.std([roc_auc(labels[i], scores[i]) for i in picks])), len(labels)


def main() -> None:
    """Measure and write benchmarks/results/split_variation.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("runs", nargs="*", type=Path)
    args = ap.parse_args()
    images, rho, labels = load_events()
    aucs = np.array(reference_aucs(tower_features(images, rho), labels, args.splits))
    lines = [
        "# How far the data split alone moves the test AUC (issue 15)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}. `benchmarks/split_variation.py --splits {args.splits}`.",
        "Real data, 2,000 events, `split: 0.5,0.1,0.4` (1,000 train / 200 validation / 800 test), split_seed 1..N as",
        "`sbt-batch train` makes them.",
        "",
        "Reference classifier: logistic regression on 22 tower features (16 largest towers, largest 2x2..8x8 window",
        "sums, rho, total ET; log1p), fitted on each split's train part. It is deterministic, so its spread is the split's.",
        "",
        "| split_seed | " + " | ".join(str(i) for i in range(1, len(aucs) + 1)) + " |",
        "|---|" + "---|" * len(aucs),
        "| test AUC | " + " | ".join(f"{a:.4f}" for a in aucs) + " |",
        "",
        f"Over {len(aucs)} splits: mean {aucs.mean():.4f}, std {aucs.std(ddof=1):.4f}, min {aucs.min():.4f}, "
        f"max {aucs.max():.4f}; {int((aucs >= 0.93).sum())} of {len(aucs)} splits reach 0.93.",
    ]
    if args.runs:
        lines += ["", "Bootstrap standard error of finished runs' test AUC (2,000 resamples of the test events):", "",
                  "| run | test AUC | bootstrap SE | test events |", "|---|---|---|---|"]
        for run in args.runs:
            auc, se, n = bootstrap_se(run)
            lines.append(f"| {run_label(run)} | {auc:.4f} | {se:.4f} | {n} |")
    text = "\n".join(lines) + "\n"
    out = REPO / "benchmarks" / "results" / "split_variation.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
