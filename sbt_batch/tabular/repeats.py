"""Summary of repeated trainings: mean and std of the sensitivity after dropping the extremes.

Contract with the batch layer: a ``train-tabular`` run of N repeats holds ``RUN/repeat-<i>/`` for
i = 0..N-1, each a full run directory whose ``sensitivity.json`` has at least ``repeat``, ``seed``,
``sensitivity`` and ``error``. :func:`collect_repeats` reads them, sorts by sensitivity, drops the
``drop`` largest and ``drop`` smallest, and reports the mean and sample standard deviation
(ddof=1; 0 when one value is kept) of the rest. It writes ``RUN/repeats.json`` and
``RUN/plots/sensitivity-repeats.{png,pdf}``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.errors import EXIT_INCOMPLETE, InputFileError, UserError
from sbt_batch.common.fileio import new_dir, write_json_atomic

REPEAT_DIR = re.compile(r"^repeat-(\d+)$")
SUMMARY_FILE = "repeats.json"


def repeat_dirs(run_dir: str | Path) -> dict[int, Path]:
    """The ``repeat-<i>`` directories below ``run_dir``, by index."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    found = {}
    for path in run_dir.iterdir():
        match = REPEAT_DIR.match(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _read(path: Path) -> dict[str, Any] | None:
    """One repeat's sensitivity.json, or None when absent; a damaged or non-finite one is one line naming it."""
    file = path / "sensitivity.json"
    try:
        text = file.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputFileError(file, f"cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text)
        value, error = float(data["sensitivity"]), float(data.get("error", 0.0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(file, f"damaged or truncated ({type(exc).__name__}); train this repeat again") from None
    if not (math.isfinite(value) and math.isfinite(error)):
        raise InputFileError(file, f"sensitivity {value} ± {error} is not finite; train this repeat again")
    return data


def trimmed_stats(values: list[float], drop: int) -> tuple[float, float, list[bool]]:
    """Mean and std (ddof=1) after dropping the ``drop`` largest and smallest; and which values were dropped."""
    n = len(values)
    if drop < 0:
        raise UserError(f"--drop: must be >= 0, got {drop}")
    if n <= 2 * drop:
        raise UserError(f"--drop: dropping {drop} largest and {drop} smallest needs at least {2 * drop + 1} repeats, found {n}")
    order = np.argsort(np.asarray(values), kind="stable")
    dropped = [False] * n
    for i in list(order[:drop]) + list(order[n - drop :]):
        dropped[int(i)] = True
    kept = np.asarray([v for v, d in zip(values, dropped) if not d])
    std = float(kept.std(ddof=1)) if len(kept) > 1 else 0.0
    return float(kept.mean()), std, dropped


def collect_repeats(
    run_dir: str | Path, drop: int = 1, expected: int | None = None, *, allow_missing: bool = False, plots: bool = True
) -> dict[str, Any]:
    """Summarise ``run_dir/repeat-*/sensitivity.json``: trimmed mean and std plus the table of all repeats."""
    run_dir = Path(run_dir)
    if expected is not None and expected < 1:
        raise UserError(f"--expected: must be at least 1, got {expected}")
    if drop < 0:
        raise UserError(f"--drop: must be >= 0, got {drop}")
    dirs = repeat_dirs(run_dir)
    wanted = range(expected) if expected is not None else dirs.keys()
    rows: list[dict[str, Any]] = []
    missing: list[int] = []
    for index in wanted:
        data = _read(dirs[index]) if index in dirs else None
        if data is None:
            missing.append(index)
            continue
        rows.append({
            "repeat": index,
            "seed": data.get("seed"),
            "sensitivity": float(data["sensitivity"]),
            "error": float(data.get("error", 0.0)),
            "auc": data.get("auc"),
            "n_bins": data.get("n_bins"),
        })
    if missing and not allow_missing:
        shown = ",".join(map(str, missing[:10])) + ("..." if len(missing) > 10 else "")
        raise UserError(f"{run_dir}: {len(missing)} repeat(s) without sensitivity.json (repeat {shown})", exit_code=EXIT_INCOMPLETE)
    if not rows:
        raise UserError(f"{run_dir}: no repeat-<i>/sensitivity.json found")
    mean, std, dropped = trimmed_stats([r["sensitivity"] for r in rows], drop)
    for row, was_dropped in zip(rows, dropped):
        row["dropped"] = was_dropped
    summary = {
        "run_dir": str(run_dir),
        "n_repeats": len(rows),
        "drop": drop,
        "n_kept": len(rows) - 2 * drop,
        "mean": mean,
        "std": std,
        "missing": missing,
        "repeats": rows,
    }
    if plots:  # first, so that repeats.json appears only with its plot (a full disk leaves neither)
        from sbt_batch.tabular.plots import plot_repeats

        with new_dir(run_dir / "plots"):
            plot_repeats(summary, run_dir / "plots" / "sensitivity-repeats")
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary


def summary_renderables(summary: dict[str, Any]) -> list[Any]:
    """The table of repeats and the trimmed mean and std line, as rich renderables for the CLI to print."""
    from rich.table import Table

    table = Table(title=f"Sensitivity per repeat ({summary['run_dir']})")
    for name in ("repeat", "seed", "sensitivity", "error", "AUC", "bins", "used"):
        table.add_column(name, justify="right")
    for row in summary["repeats"]:
        auc = f"{row['auc']:.4f}" if isinstance(row.get("auc"), (int, float)) else "-"
        table.add_row(
            str(row["repeat"]), str(row.get("seed", "-")), f"{row['sensitivity']:.4f}", f"{row['error']:.4f}",
            auc, str(row.get("n_bins", "-")), "dropped" if row["dropped"] else "yes",
        )
    out: list[Any] = [
        table,
        f"sensitivity = {summary['mean']:.4f} ± {summary['std']:.4f} (mean ± std of {summary['n_kept']} of "
        f"{summary['n_repeats']} repeats, dropping the {summary['drop']} largest and smallest)",
    ]
    if summary["missing"]:
        out.append(f"[yellow]missing repeats: {', '.join(map(str, summary['missing']))}[/yellow]")
    return out
