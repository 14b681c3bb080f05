"""The report's plots: matplotlib (mplhep ATLAS style) figures embedded as base64 PNG ``data:`` URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from sbt_batch.report.model import OUTCOME_COLORS, Attempt

DPI = 96


def to_data_uri(fig: Any) -> str:
    """Render ``fig`` as PNG into a ``data:image/png;base64,...`` URI and close it (no metadata, no URL)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 4.5) -> tuple[Any, Any]:
    from sbt_batch.common.plots import new_figure

    return new_figure(figsize=(width, height))


# --------------------------------------------------------------------------- batch runs


def _time_unit(span: float) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the axis readable."""
    if span > 3 * 3600:
        return 3600.0, "hours"
    if span > 300:
        return 60.0, "minutes"
    return 1.0, "seconds"


def timeline(attempts: Sequence[Attempt], t0: float, now: float) -> str:
    """Gantt chart: one row per task, queued (grey) then running (coloured by outcome), every attempt."""
    from matplotlib.patches import Patch

    tasks = sorted({a.index for a in attempts})
    row = {t: n for n, t in enumerate(tasks)}
    scale, unit = _time_unit(now - t0)
    fig, ax = _figure(9.0, min(12.0, max(2.5, 0.28 * len(tasks) + 1.5)))
    thin = len(tasks) > 60
    height = 0.9 if thin else 0.7
    queued, running = [], []
    for a in attempts:
        start = (a.started if a.started is not None else now) - t0
        if a.queued is not None and a.queued - t0 < start:
            queued.append((row[a.index], a.queued - t0, start - (a.queued - t0)))
        if a.started is not None:
            end = (a.finished if a.finished is not None else now) - t0
            running.append((row[a.index], start, max(end - start, 1e-3), OUTCOME_COLORS.get(a.outcome, "#888888")))
            if not thin and (a.attempt > 1 or a.tries > 1):
                label = f" #{a.attempt}" + (f" ({a.tries} tries)" if a.tries > 1 else "")
                ax.text(start / scale, row[a.index], label, va="center", ha="left", fontsize=8)
    if thin:  # many tasks: one line collection per kind of segment (thousands of bars render slowly)
        fig_h = fig.get_size_inches()[1] * 72 * 0.75
        width_pt = max(0.5, fig_h / max(len(tasks), 1) * height)
        for segs, colors in ((queued, ["#d0d0d0"] * len(queued)), (running, [r[3] for r in running])):
            if segs:
                y, left, width = (np.asarray(v, dtype=float) for v in list(zip(*segs))[:3])
                ax.hlines(y, left / scale, (left + width) / scale, colors=colors, linewidth=width_pt)
    else:
        if queued:
            q_rows, q_left, q_width = zip(*queued)
            ax.barh(q_rows, np.asarray(q_width) / scale, left=np.asarray(q_left) / scale, height=height, color="#d0d0d0", linewidth=0)
        if running:
            r_rows, r_left, r_width, r_colors = zip(*running)
            ax.barh(r_rows, np.asarray(r_width) / scale, left=np.asarray(r_left) / scale, height=height, color=r_colors,
                    edgecolor="black", linewidth=0.4)
    ax.set_xlabel(f"{unit.capitalize()} since the first submission")
    ax.set_ylabel("Task")
    ax.set_ylim(-0.6, len(tasks) - 0.4)
    ax.invert_yaxis()
    if len(tasks) <= 40:
        ax.set_yticks(range(len(tasks)), [str(t) for t in tasks])
    ax.set_xlim(left=0)
    seen = ["queued"] + [o for o in OUTCOME_COLORS if any(a.outcome == o for a in attempts)]
    handles = [Patch(color="#d0d0d0" if o == "queued" else OUTCOME_COLORS[o], label=o) for o in seen]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return to_data_uri(fig)


def durations(values: Sequence[float], median: float) -> str:
    """Histogram of task durations with the median and the 2 x median straggler threshold."""
    fig, ax = _figure()
    v = np.asarray(values, dtype=float)
    bins = min(40, max(5, int(np.sqrt(len(v))) * 2))
    ax.hist(v, bins=bins, histtype="stepfilled", color="tab:blue", alpha=0.7)
    ax.axvline(median, color="black", ls="--", label=f"median {median:.1f} s")
    ax.axvline(2 * median, color="tab:red", ls=":", label="2 x median (stragglers beyond)")
    ax.set_xlabel("Task duration [s]")
    ax.set_ylabel("Tasks")
    ax.legend(loc="upper right", fontsize="small")
    return to_data_uri(fig)


def throughput(indices: Sequence[int], rates: Sequence[float], overall: float | None) -> str:
    """Events per second of every completed task (bars), with the run's overall rate."""
    fig, ax = _figure()
    if len(indices) <= 60:
        ax.bar([str(i) for i in indices] if len(indices) <= 40 else list(indices), rates, color="tab:green")
    else:  # thousands of bars render slowly: points
        ax.plot(list(indices), list(rates), ".", color="tab:green", markersize=3)
        ax.set_ylim(bottom=0)
    if overall:
        ax.axhline(overall, color="black", ls="--", label=f"overall {overall:,.0f} events/s (wall)")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("Task")
    ax.set_ylabel("Events / s")
    return to_data_uri(fig)


# --------------------------------------------------------------------------- training runs


def history(rows: Sequence[dict[str, Any]], key: str) -> str:
    """Train and validation ``key`` (loss or accuracy) per epoch."""
    fig, ax = _figure(6.0, 4.2)
    epochs = [h.get("epoch", n + 1) for n, h in enumerate(rows)]
    ax.plot(epochs, [h.get(key) for h in rows], "o-", label="train")
    if any(f"val_{key}" in h for h in rows):
        ax.plot(epochs, [h.get(f"val_{key}") for h in rows], "s--", label="validation")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel(key.capitalize())
    ax.legend(loc="best", fontsize="small")
    return to_data_uri(fig)


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, label: str) -> str:
    """ROC curve (background vs signal efficiency) with the AUC in the legend."""
    from sbt_batch.common.plots import draw_roc

    fig, ax = _figure(6.0, 5.0)
    draw_roc(ax, [(label, fpr, tpr, auc)])
    ax.legend(loc="upper left", fontsize="small")
    return to_data_uri(fig)


def rejection(fpr: np.ndarray, tpr: np.ndarray, points: dict[float, float | None]) -> str:
    """Background rejection 1/FPR against signal efficiency (log scale), with the quoted working points."""
    fig, ax = _figure(6.0, 5.0)
    ok = fpr > 0
    ax.plot(tpr[ok], 1.0 / fpr[ok], color="tab:purple")
    for eff, rej in points.items():
        if rej:
            ax.plot([eff], [rej], "o", color="black")
            ax.annotate(f"{rej:.1f} at {eff:.0%}", (eff, rej), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("Signal efficiency")
    ax.set_ylabel("Background rejection 1 / FPR")
    ax.set_xlim(0, 1)
    return to_data_uri(fig)


def scores(labels: np.ndarray, values: np.ndarray) -> str:
    """Normalized score distributions of signal and background."""
    fig, ax = _figure(6.0, 5.0)
    bins = np.linspace(0, 1, 41)
    for cls, name in ((1, "signal"), (0, "background")):
        sel = values[labels == cls]
        if len(sel):
            ax.hist(sel, bins=bins, density=True, histtype="step", lw=2, label=name)
    ax.set_xlabel("Signal score")
    ax.set_ylabel("Normalized events")
    ax.set_yscale("log")
    ax.legend(loc="upper center", fontsize="small")
    return to_data_uri(fig)
