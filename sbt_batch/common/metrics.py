"""ROC curves, AUC and background rejection at fixed signal efficiency (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

EFFICIENCIES = (0.5, 0.8)




def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) for every distinct score threshold, from (0,0) to (1,1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tied score group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count one half)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def rejection_at(fpr: np.ndarray, tpr: np.ndarray, efficiency: float) -> float:
    """Background rejection 1/FPR at the given signal efficiency (interpolated; inf if FPR is 0)."""
    i = int(np.searchsorted(tpr, efficiency, side="left"))
    i = min(max(i, 1), len(tpr) - 1)
    t0, t1, f0, f1 = tpr[i - 1], tpr[i], fpr[i - 1], fpr[i]
    f = f1 if t1 == t0 else f0 + (f1 - f0) * (efficiency - t0) / (t1 - t0)
    return float("inf") if f <= 0 else float(1.0 / f)


def compute_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Accuracy (cut 0.5), baseline error (100 - accuracy in %), AUC and rejections at 50%/80% signal eff."""
    labels = np.asarray(labels).astype(int)
    acc = float(np.mean((np.asarray(scores) > 0.5).astype(int) == labels)) if len(labels) else float("nan")
    fpr, tpr = roc_curve(labels, scores)
    out: dict[str, Any] = {
        "events": int(len(labels)),
        "signal_events": int(labels.sum()),
        "background_events": int(len(labels) - labels.sum()),
        "accuracy": acc,
        "baseline_error_percent": 100.0 * (1.0 - acc),
        "auc": auc(fpr, tpr),
    }
    for eff in EFFICIENCIES:
        out[f"rejection_at_{int(eff * 100)}"] = rejection_at(fpr, tpr, eff)
    return out


