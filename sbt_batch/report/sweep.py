"""Gather the sweep section of a batch run of kind ``sweep``: the comparison table, its two plots and best.yaml.

The section reads what ``sbt-batch collect RUN`` (:func:`sbt_batch.cnn.sweep.sweep_report`) wrote under
``<sweep_dir>/report/``. When that folder is missing, or holds fewer finished point x seeds than the sweep
has now, the report is computed into a temporary folder instead (numpy and matplotlib only: no TensorFlow),
so the sweep directory is never written by ``report``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from sbt_batch.batch.run import Run
from sbt_batch.common.errors import UserError
from sbt_batch.report.model import SweepReport

log = logging.getLogger(__name__)
FIGURES = {"baseline_error": "baseline_error.png", "roc_best": "roc_best.png"}


def png_data_uri(path: Path) -> str | None:
    """``data:image/png;base64,...`` of the PNG at ``path`` (None when missing or not a PNG)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data[:8] == b"\x89PNG\r\n\x1a\n" else None


def _read_dir(rep: SweepReport, folder: Path) -> bool:
    """Fill ``rep`` from a sweep report folder; False when its sweep.json is missing or unreadable."""
    try:
        points = json.loads((folder / "sweep.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(points, list):
        return False
    rep.points = [p for p in points if isinstance(p, dict) and "point" in p]
    for key, name in FIGURES.items():
        uri = png_data_uri(folder / name)
        if uri:
            rep.figures[key] = uri
    try:
        rep.best_yaml = (folder / "best.yaml").read_text()
    except OSError:
        rep.best_yaml = ""
    return True


def _done_count(sweep: Any) -> int:
    from sbt_batch.cnn.sweep import task_done

    return sum(task_done(sweep.task_dir(p, s) / "run") for p in sweep.points for s in sweep.seeds)


def sweep_section(run: Run) -> SweepReport:
    """The sweep section of batch run ``run`` (kind sweep): from its collected report, or computed now."""
    from sbt_batch.cnn.sweep import read_sweep_json, sweep_report

    sweep_dir = str((run.manifest.get("options") or {}).get("sweep_dir") or "")
    rep = SweepReport(sweep_dir=sweep_dir, report_dir=str(Path(sweep_dir) / "report") if sweep_dir else "")
    try:
        sweep = read_sweep_json(run.path)
    except UserError as exc:
        rep.note = f"no sweep table: {exc}"
        return rep
    rep.n_tasks = len(sweep.points) * len(sweep.seeds)
    rep.done = _done_count(sweep)
    if rep.done and _read_dir(rep, Path(rep.report_dir)) and sum(len(p.get("seeds") or []) for p in rep.points) == rep.done:
        rep.source = "collected"
        return rep
    if rep.done == 0:
        rep.note = f"no point x seed of this sweep has finished yet (0 of {rep.n_tasks})"
        return rep
    rep.points, rep.figures, rep.best_yaml = [], {}, ""
    with tempfile.TemporaryDirectory(prefix="sbt-sweep-report-") as tmp:
        try:
            sweep_report(sweep.out, Path(tmp) / "report", allow_missing=True)
        except UserError as exc:
            rep.note = f"no sweep table: {exc}; run sbt-batch collect {run.path} first"
            return rep
        _read_dir(rep, Path(tmp) / "report")
    rep.source = "computed"
    rep.note = (f"computed now from the {rep.done} finished point x seed(s): {rep.report_dir} is missing or older; "
                f"sbt-batch collect {run.path} writes it")
    log.debug("sweep section of %s computed in a temporary folder", run.path)
    return rep


def pm(mean: Any, std: Any, digits: int = 4) -> str:
    """``mean ± std`` with ``digits`` decimals, ``-`` when the mean is missing or NaN."""
    if not isinstance(mean, (int, float)) or math.isnan(mean):
        return "-"
    if not isinstance(std, (int, float)) or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
