"""Gather a training run's report from its files (no TensorFlow): history, evaluation, config and exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sbt_batch.common.rundir import RunDir
from sbt_batch.report.model import TrainingReport

EXPORTS = (("savedmodel", "SavedModel"), ("model.pb", "frozen graph"), ("model.onnx", "ONNX"), ("jpeg", "JPEG image sets"))


def is_training_run(path: Path) -> bool:
    """A directory written by ``sbt-batch train`` (config.yaml plus history.json, model.keras or split.npz)."""
    run = RunDir(path)
    return run.config.is_file() and (run.history.is_file() or run.model.exists() or run.split.is_file())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def exports_of(run: RunDir) -> list[dict[str, Any]]:
    """The exports present under RUN_DIR/export: name, kind, size and whether a provenance record is there."""
    from sbt_batch.common import provenance as P
    from sbt_batch.common.errors import UserError

    out = []
    for name, kind in EXPORTS:
        target = run.export / name
        if not target.exists():
            continue
        try:
            P.read(target)
            prov = "recorded"
        except UserError:
            prov = "none"
        out.append({"name": f"export/{name}", "kind": kind, "size": _size(target), "provenance": prov})
    return out


def _model_inputs(run: RunDir) -> list[dict[str, Any]]:
    from sbt_batch.common import provenance as P
    from sbt_batch.common.errors import UserError

    try:
        record = P.read(run.model)
    except UserError:
        return []
    out = []
    for item in record.get("inputs") or []:
        roots = P.root_files(item["provenance"]) if item.get("provenance") else []
        out.append({"path": item.get("path"), "size": item.get("size"), "digest": item.get("digest"), "root_files": len(roots)})
    return out


def training_report(path: str | Path, figures: bool = True) -> TrainingReport:
    """Everything the page and the terminal summary show about training run ``path``."""
    run = RunDir(Path(path))
    config = run.read_config() if run.config.is_file() else {}
    history = run.read_history()
    metrics = None
    metrics_file = run.eval / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
    roc_file = run.eval / "roc.npz"
    evaluated = metrics is not None and roc_file.is_file()
    note = "" if evaluated else (f"evaluate has not run: no {run.eval.name}/metrics.json and roc.npz; "
                                 f"`sbt-batch evaluate {run.path}` writes them (ROC, scores and rejections appear here then)")
    if not history:
        note = (note + "; " if note else "") + "no history.json: training has not finished an epoch"
    rep = TrainingReport(path=str(run.path), name=run.path.name, model=str(config.get("model", "?")), config=config,
                         history=history, metrics=metrics, evaluated=evaluated, note=note, exports=exports_of(run),
                         inputs=_model_inputs(run))
    if figures:
        _figures(rep, roc_file if evaluated else None)
    return rep


def _figures(rep: TrainingReport, roc_file: Path | None) -> None:
    import numpy as np

    from sbt_batch.common.metrics import EFFICIENCIES
    from sbt_batch.report import figures as F

    if rep.history:
        rep.figures["loss"] = F.history(rep.history, "loss")
        if any("accuracy" in h for h in rep.history):
            rep.figures["accuracy"] = F.history(rep.history, "accuracy")
    if roc_file is None or rep.metrics is None:
        return
    with np.load(roc_file) as z:
        fpr, tpr = z["fpr"], z["tpr"]
        labels = z["labels"] if "labels" in z else None
        scores = z["scores"] if "scores" in z else None
    rep.figures["roc"] = F.roc(fpr, tpr, float(rep.metrics.get("auc") or 0.0), rep.model)
    points = {eff: rep.metrics.get(f"rejection_at_{int(eff * 100)}") for eff in EFFICIENCIES}
    rep.figures["rejection"] = F.rejection(fpr, tpr, points)
    if labels is not None and scores is not None:
        rep.figures["scores"] = F.scores(np.asarray(labels), np.asarray(scores))
