"""Plots of the kinematic classifier: NN output by process, training curves, sensitivity per repeat."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.plots import atlas_label, new_figure, save_figure

PROCESS_COLORS = {"ttbar": "#ffcc00", "Wjets": "#339933", "Zjets": "#3366ff", "diboson": "#999999"}


def plot_nn_output(scores: np.ndarray, y: np.ndarray, weights: np.ndarray, sample: np.ndarray, stem: Path, binning: Any = None, bins: int = 40) -> list[Path]:
    """Stack the weighted NN output of the background processes and overlay the (scaled) signal."""
    fig, ax = new_figure(figsize=(8, 6))
    edges = np.linspace(0.0, 1.0, bins + 1)
    bkg = y == 0
    names = list(dict.fromkeys(sample[bkg].tolist()))
    names.sort(key=lambda n: float(weights[bkg & (sample == n)].sum()))
    values = [scores[bkg & (sample == n)] for n in names]
    wts = [weights[bkg & (sample == n)] for n in names]
    if names:
        ax.hist(values, bins=edges, weights=wts, stacked=True, histtype="stepfilled", label=names,
                color=[PROCESS_COLORS.get(n) for n in names] if all(n in PROCESS_COLORS for n in names) else None)
    s_total, b_total = float(weights[~bkg].sum()), float(weights[bkg].sum())
    factor = 10 ** max(0, int(math.floor(math.log10(b_total / s_total)))) if s_total > 0 and b_total > 0 else 1
    sig_names = sorted(set(sample[~bkg].tolist()))
    ax.hist(scores[~bkg], bins=edges, weights=weights[~bkg] * factor, histtype="step", color="red", linewidth=2,
            label=f"{'+'.join(sig_names) or 'signal'} x{factor}")
    if binning is not None:
        for edge in binning.low[:-1]:
            ax.axvline(edge, color="black", linestyle=":", linewidth=0.8)
        ax.plot([], [], color="black", linestyle=":", linewidth=0.8, label=f"transformation D bins (Z = {binning.sensitivity:.2f})")
    ax.set_xlabel("NN output")
    ax.set_ylabel("Weighted events / bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.4)  # room for the legend
    ax.legend(loc="upper right", fontsize="small")
    atlas_label(ax)
    return save_figure(fig, stem)


def plot_history(history: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Loss and accuracy per epoch, train against validation, side by side (training.png/pdf)."""
    epochs = [row["epoch"] for row in history]
    metrics = [(m, label) for m, label in (("loss", "Weighted binary cross-entropy"), ("accuracy", "Weighted accuracy"))
               if history and m in history[0]]
    if not metrics:
        return []
    fig, axes = new_figure(ncols=len(metrics), figsize=(7 * len(metrics), 6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics):
        ax.plot(epochs, [row[metric] for row in history], marker="o", label="train")
        if f"val_{metric}" in history[0]:
            ax.plot(epochs, [row[f"val_{metric}"] for row in history], marker="s", label="validation")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.legend()
        atlas_label(ax)
    fig.tight_layout()
    return save_figure(fig, Path(folder) / "training")


def plot_repeats(summary: dict[str, Any], stem: Path) -> list[Path]:
    """Sensitivity with its error per repeat; dropped repeats hollow; trimmed mean ± std as a band."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure(figsize=(8, 6))
    rows = summary["repeats"]
    for dropped, style in ((False, {"fmt": "o", "color": "black", "label": "used"}), (True, {"fmt": "o", "mfc": "none", "color": "gray", "label": "dropped"})):
        sel = [r for r in rows if r["dropped"] == dropped]
        if sel:
            ax.errorbar([r["repeat"] for r in sel], [r["sensitivity"] for r in sel], yerr=[r["error"] for r in sel], **style)
    mean, std = summary["mean"], summary["std"]
    ax.axhline(mean, color="tab:blue", label=f"mean {mean:.3f} ± {std:.3f}")
    ax.axhspan(mean - std, mean + std, color="tab:blue", alpha=0.2)
    indices = [r["repeat"] for r in rows]
    ax.set_xlim(min(indices) - 0.5, max(indices) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(top=ax.get_ylim()[0] + (ax.get_ylim()[1] - ax.get_ylim()[0]) * 1.3)  # room for the legend
    ax.set_xlabel("Repeat")
    ax.set_ylabel("Binned Asimov sensitivity")
    ax.legend()
    atlas_label(ax)
    return save_figure(fig, stem)
