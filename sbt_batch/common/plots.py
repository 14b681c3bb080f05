"""Plot helpers shared by every command: mplhep ATLAS style and atomic PNG+PDF output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sbt_batch.common.fileio import atomic_path

_STYLED = False


def use_style() -> None:
    """Select the non-interactive Agg backend and the mplhep ATLAS style (once per process)."""
    global _STYLED
    if _STYLED:
        return
    from sbt_batch.common.optional import require

    require("matplotlib", "plots").use("Agg", force=False)
    require("mplhep", "plots").style.use("ATLAS")
    _STYLED = True


def new_figure(**kwargs: Any) -> tuple[Any, Any]:
    """Return ``(fig, ax)`` in ATLAS style (keyword arguments go to ``plt.subplots``)."""
    use_style()
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def atlas_label(ax: Any, text: str = "Simulation Internal") -> None:
    """Draw the ATLAS label with ``text`` on ``ax`` (no luminosity or energy for MC studies)."""
    import mplhep

    mplhep.atlas.text(text, ax=ax, loc=1)


def save_figure(fig: Any, stem: str | os.PathLike[str]) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` atomically, close it, and return both paths."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for ext in ("png", "pdf"):
            target = stem.with_name(stem.name + f".{ext}")
            with atomic_path(target, suffix=f".{ext}") as tmp:
                fig.savefig(tmp, format=ext, dpi=150 if ext == "png" else None, bbox_inches="tight")
            paths.append(target)
    finally:
        plt.close(fig)
    return paths


def draw_roc(ax: Any, curves: Any) -> None:
    """Draw ROC curves (background vs signal efficiency) of ``(label, fpr, tpr, auc)`` on ``ax``, with the random line."""
    for label, fpr, tpr, auc in curves:
        ax.plot(tpr, fpr, label=f"{label} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random")
    ax.set_xlabel("Signal efficiency")
    ax.set_ylabel("Background efficiency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
