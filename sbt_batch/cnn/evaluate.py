"""Evaluate trained runs (metrics.json, ROC, scores, training curves) and compare several runs."""


from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.errors import InputFileError, UserError
from sbt_batch.common.fileio import atomic_path, staged_dir, write_json_atomic
from sbt_batch.common.metrics import compute_metrics, roc_curve
from sbt_batch.common.provenance import record_evaluation
from sbt_batch.common.rundir import RunDir

# --------------------------------------------------------------------------- predictions


def load_run_model(run: RunDir) -> Any:
    """Load RUN_DIR/model.keras (a damaged file is one line naming it)."""
    from sbt_batch.common.console import import_keras

    run.require("model")
    keras = import_keras("sbt-batch evaluate")

    try:
        from sbt_batch.cnn.models import custom_objects

        return keras.models.load_model(run.model, compile=False, custom_objects=custom_objects())
    except Exception as exc:  # zipfile, h5py, json and Keras all raise their own types for a damaged file
        why = "damaged or truncated, or saved from model code this installation lacks"  # e.g. a layer without build()
        raise InputFileError(run.model, f"cannot load the model: {why} ({type(exc).__name__})") from None


def run_preprocess(run: RunDir, cfg: dict[str, Any]) -> Any:
    """The run's :class:`~sbt_batch.cnn.prepare.Preprocess` from its config.yaml (one line naming the file when damaged)."""
    from sbt_batch.cnn import prepare as D

    try:
        return D.Preprocess.from_dict(cfg["preprocess"])
    except (KeyError, TypeError, ValueError, AttributeError, UserError):
        raise InputFileError(run.config, "damaged 'preprocess' entry (truncated or edited?)") from None


def run_stream(run: RunDir, signal: Sequence[str] | None = None, background: Sequence[str] | None = None
               ) -> tuple[Any, np.ndarray | None, dict[str, np.ndarray] | None]:
    """The run's event stream (its preprocessing) over its own files, or over new labelled files.

    Returns (stream, ids to use or None for the run's split, split dict or None).
    """
    from sbt_batch.cnn import prepare as D
    from sbt_batch.cnn import stream as DS

    cfg = run.read_config("preprocess", "model")
    prep = run_preprocess(run, cfg)
    if signal or background:
        sources = D.open_sources(list(signal or []), list(background or []))
        index = D.EventIndex(sources)
        if index.shape[1] != prep.input_shape[1] or max(prep.rows) >= index.shape[0]:
            raise UserError(f"{sources[0].path}: image shape {index.shape} does not fit the run's rows {cfg['rows']}")
        return DS.EventStream(index, prep), np.arange(index.n, dtype=np.int64), None
    split, files = D.load_split(run.split)
    for f in files:
        if not isinstance(f, dict) or "path" not in f:
            raise InputFileError(run.split, "damaged file list")
        if not Path(f["path"]).exists():
            raise UserError(f"{f['path']}: input file of run {run.path} not found (use --signal/--background)")
    sources = D.open_sources([f["path"] for f in files if int(f["label"]) == D.SIGNAL],
                             [f["path"] for f in files if int(f["label"]) == D.BACKGROUND])
    return DS.EventStream(D.EventIndex(sources), prep), None, split


def predict(model: Any, stream: Any, ids: np.ndarray, batch_size: int = 1024, tta: str = "none") -> np.ndarray:
    """Signal scores for ``ids`` (in the given order); ``tta``: averaged over that symmetry group."""
    from sbt_batch.cnn.models import signal_score
    from sbt_batch.cnn.symmetry import averaged_scores

    out = []
    for lo in range(0, len(ids), batch_size):
        x = stream.read(ids[lo : lo + batch_size])
        out.append(averaged_scores(lambda g: signal_score(model(g, training=False)), x, tta))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --------------------------------------------------------------------------- plots


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], stem: Path) -> list[Path]:
    """ROC curves (background rejection vs signal efficiency style: FPR vs TPR) with AUC in the legend."""
    from sbt_batch.common.plots import atlas_label, draw_roc, new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 6))
    draw_roc(ax, curves)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.88), fontsize="small")
    atlas_label(ax)
    return save_figure(fig, stem)


def plot_scores(labels: np.ndarray, scores: np.ndarray, stem: Path) -> list[Path]:
    """Normalized score distributions for signal and background."""
    from sbt_batch.common.plots import atlas_label, new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 6))
    bins = np.linspace(0, 1, 41)
    ax.hist(scores[labels == 1], bins=bins, density=True, histtype="step", lw=2, label="signal (ZvvHbb)")
    ax.hist(scores[labels == 0], bins=bins, density=True, histtype="step", lw=2, label="background (JZ0W)")
    ax.set_xlabel("CNN signal score")
    ax.set_ylabel("Normalized events")
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 30)
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.88))
    atlas_label(ax)
    return save_figure(fig, stem)


def plot_history(history: list[dict[str, Any]], key: str, stem: Path) -> list[Path]:
    """Train and validation ``key`` (loss or accuracy) per epoch."""
    from sbt_batch.common.plots import atlas_label, new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 6))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h[key] for h in history], "o-", label="train")
    ax.plot(epochs, [h[f"val_{key}"] for h in history], "s--", label="validation")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(key.capitalize())
    ax.legend(loc="best")
    atlas_label(ax)
    return save_figure(fig, stem)


# --------------------------------------------------------------------------- evaluate / compare


def evaluate_run(run_dir: str | Path, signal: Sequence[str] | None = None, background: Sequence[str] | None = None,
                 out: str | Path | None = None, plots: bool = True) -> dict[str, Any]:
    """Evaluate RUN_DIR on its test split (or on the given files); write metrics.json, roc.npz and plots."""
    run = RunDir(Path(run_dir)).require("config", "model")
    stream, ids, split = run_stream(run, signal, background)
    if ids is None:
        assert split is not None
        ids = split.get("test", np.zeros(0, np.int64))
        source = "test split"
    else:
        source = "files"
    if len(ids) == 0:
        raise UserError(f"{run.path}: no test events to evaluate: dataset is empty after filtering (use --signal/--background)")
    labels = stream.index.labels[ids]
    if labels.min() == labels.max():
        raise UserError(f"{run.path}: the evaluation events are all of one class; need signal and background")
    out_dir = Path(out) if out else (run.eval if source == "test split" else run.path / "eval-files")
    history = run.read_history() if plots else []  # damaged inputs fail before any work
    model = load_run_model(run)
    try:
        scores = predict(model, stream, ids, tta=str(run.read_config().get("tta") or "none"))
    finally:
        stream.close()
    metrics = compute_metrics(labels, scores)
    metrics.update(run=str(run.path), model=run.read_config().get("model"), evaluated_on=source)
    fpr, tpr = roc_curve(labels, scores)
    with staged_dir(out_dir) as stage:  # all files appear together, or none (and no new folder) on failure
        with atomic_path(stage / "roc.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, fpr=fpr, tpr=tpr, labels=labels, scores=scores, ids=ids)
        if plots:
            name = str(metrics["model"])
            plot_roc([(name, fpr, tpr, metrics["auc"])], stage / "roc")
            plot_scores(labels, scores, stage / "scores")
            if history:
                plot_history(history, "loss", stage / "loss")
                plot_history(history, "accuracy", stage / "accuracy")
        write_json_atomic(stage / "metrics.json", _json_safe(metrics))
    record_evaluation(out_dir / "metrics.json", run.path, [s.path for s in stream.index.sources])
    return metrics


def read_eval(run: RunDir) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """RUN_DIR/eval's metrics.json and ROC curve (fpr, tpr); a damaged file is one line naming it."""
    again = f"run 'sbt-batch evaluate {run.path}' again"
    path = run.eval / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict) or "auc" not in metrics:
            raise ValueError("no 'auc'")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(path, f"damaged or truncated ({type(exc).__name__}); {again}") from None
    path = run.eval / "roc.npz"
    try:
        with np.load(path) as z:
            fpr, tpr = np.asarray(z["fpr"], dtype=np.float64), np.asarray(z["tpr"], dtype=np.float64)
    except Exception as exc:  # zipfile, numpy and pickle raise their own types for a damaged file
        raise InputFileError(path, f"damaged or truncated ({type(exc).__name__}); {again}") from None
    return metrics, fpr, tpr


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _label(run: RunDir, cfg: dict[str, Any], names: list[str]) -> str:
    name = str(cfg.get("model", run.path.name))
    return name if names.count(name) == 1 else f"{name} ({run.path.name})"


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = "compare") -> list[dict[str, Any]]:
    """Overlay ROC curves, draw the baseline-error bar chart, write compare.json; return the table rows."""
    from sbt_batch.common.plots import atlas_label, new_figure, save_figure

    if not run_dirs:
        raise UserError("compare: give at least one RUN_DIR")
    runs = [RunDir(Path(r)).require("config") for r in run_dirs]
    cfgs = [r.read_config("model") for r in runs]
    names = [str(c.get("model")) for c in cfgs]
    rows: list[dict[str, Any]] = []
    curves = []
    for run, cfg in zip(runs, cfgs):
        if not (run.eval / "metrics.json").exists() or not (run.eval / "roc.npz").exists():
            evaluate_run(run.path)
        m, fpr, tpr = read_eval(run)
        label = _label(run, cfg, names)
        curves.append((label, fpr, tpr, m["auc"]))
        rows.append({"run": str(run.path), "label": label, **{k: m.get(k) for k in (
            "auc", "accuracy", "baseline_error_percent", "rejection_at_50", "rejection_at_80", "events")}})
    with staged_dir(Path(out)) as stage:  # all files appear together, or none on failure
        plot_roc(curves, stage / "roc")
        fig, ax = new_figure(figsize=(max(6, 1.4 * len(rows)), 6))
        ax.bar([r["label"] for r in rows], [r["baseline_error_percent"] or 0 for r in rows], color="tab:blue")
        ax.set_ylabel("Baseline error [%]")
        ax.set_ylim(0, 1.3 * max((r["baseline_error_percent"] or 0) for r in rows) + 1e-9)
        ax.tick_params(axis="x", labelrotation=30)
        atlas_label(ax)
        save_figure(fig, stage / "baseline_error")
        write_json_atomic(stage / "compare.json", rows)
    return rows
