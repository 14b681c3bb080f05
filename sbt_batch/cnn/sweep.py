"""Model sweeps: a grid (or random sample) of ``train`` options x seeds as one batch job array, and its report.

A sweep config (``jobs/sweep-gfex.yaml``)::

    out: runs/sweep-gfex        # sweep directory: sweep.json, points/<point>/seed-<s>/{train.yaml,run/}, report/
    train: {...}                # options every point shares (any `sbt-batch train` key)
    grid: {model: [2c2m, res3], padding: [valid, circular]}   # every combination ...
    points: [{model: res3, augment: full}]                   # ... plus these points
    sample: null                # N: a seeded random sample of N of the grid's combinations
    seeds: [1, 2, 3]

Each point x seed is one task ``sbt-batch sweep-point --config .../train.yaml``: it trains (or resumes, or
skips a finished training) and evaluates. All points share one split (``split_seed``, default the first
seed). Submitting again submits only the point x seeds without ``run/eval/metrics.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbt_batch.common.config import check_keys, load_yaml
from sbt_batch.common.errors import InputFileError, UserError

TOP_KEYS = ("out", "train", "grid", "points", "sample", "sample_seed", "seeds", "best")
NOT_SWEPT = ("out", "resume", "seed")  # set per task by the sweep
SWEEP_JSON = "sweep.json"
METRICS = ("auc", "accuracy", "baseline_error_percent", "rejection_at_50", "rejection_at_80", "train_seconds")


@dataclass
class Sweep:
    """A resolved sweep: its directory, shared options, points (id -> own options) and seeds."""

    out: Path
    base: dict[str, Any]
    points: dict[str, dict[str, Any]]
    seeds: list[int]
    best: int = 3

    def task_dir(self, point: str, seed: int) -> Path:
        """The folder of one point x seed (train.yaml and run/)."""
        return self.out / "points" / point / f"seed-{seed}"

    def options(self, point: str, seed: int) -> dict[str, Any]:
        """The full ``train`` options of one point x seed."""
        return {**self.base, **self.points[point], "seed": seed, "out": str(self.task_dir(point, seed) / "run")}

    def to_dict(self) -> dict[str, Any]:
        """What sweep.json stores."""
        return {"out": str(self.out), "base": self.base, "points": self.points, "seeds": self.seeds, "best": self.best}


def point_id(options: dict[str, Any]) -> str:
    """A stable folder name for a point: its own option values, e.g. ``res3_augment=full``."""
    if not options:
        return "base"
    items = sorted(options.items(), key=lambda kv: kv[0] != "model")  # the model first, then in the config's order
    text = "_".join(str(v) if k == "model" else f"{k.replace('_', '')}={v}" for k, v in items)
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text.replace(",", "+"))[:120]


def _grid_points(grid: Any, where: str) -> list[dict[str, Any]]:
    if grid is None:
        return []
    if not isinstance(grid, dict):
        raise UserError(f"{where}: grid: expected a mapping of option -> list of values")
    keys = list(grid)
    values = []
    for k in keys:
        v = grid[k] if isinstance(grid[k], list) else [grid[k]]
        if not v:
            raise UserError(f"{where}: grid.{k}: empty list of values")
        values.append(v)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else []


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep config: every key, every point (as `train` would check it), before anything runs."""
    from sbt_batch.cnn.config import TrainConfig

    where = str(path)
    spec = load_yaml(path)
    check_keys(spec, TOP_KEYS, where)
    allowed = [k for k in TrainConfig.keys() if k not in NOT_SWEPT]
    base = spec.get("train") or {}
    if not isinstance(base, dict):
        raise UserError(f"{where}: train: expected a mapping of train options")
    check_keys(base, allowed, f"{where}: train")
    grid = spec.get("grid")
    if isinstance(grid, dict):
        check_keys(grid, allowed, f"{where}: grid")
    points = _grid_points(grid, where)
    sample = spec.get("sample")
    if sample is not None:
        if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
            raise UserError(f"{where}: sample: expected a number of grid points (at least 1), got {sample!r}")
        rng = np.random.default_rng(int(spec.get("sample_seed") or 0))
        points = [points[i] for i in sorted(rng.choice(len(points), min(sample, len(points)), replace=False))] if points else []
    extra = spec.get("points") or []
    if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
        raise UserError(f"{where}: points: expected a list of mappings of train options")
    for i, p in enumerate(extra):
        check_keys(p, allowed, f"{where}: points[{i}]")
    points += [dict(p) for p in extra]
    if not points:
        raise UserError(f"{where}: grid: empty (no grid values and no points: nothing to sweep)")
    seeds = spec.get("seeds", [1])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError(f"{where}: seeds: expected a list of seeds (integers >= 0), got {spec.get('seeds')!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: seeds: repeated seed in {seeds}")
    base = {"split_seed": seeds[0], "progress": False, **base}  # one split for every point and seed
    out = spec.get("out")
    if not isinstance(out, str) or not out:
        raise UserError(f"{where}: out: expected the sweep directory (text)")
    by_id: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(points):
        _check_point(base, p, seeds[0], f"{where}: point {i} ({_describe(p)})")
        by_id.setdefault(point_id(p), p)
    best = spec.get("best", 3)
    if not isinstance(best, int) or best < 1:
        raise UserError(f"{where}: best: expected a number of points (at least 1), got {best!r}")
    return Sweep(Path(out).absolute(), _absolute_files(base), by_id, [int(s) for s in seeds], best)


def _describe(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def _check_point(base: dict[str, Any], point: dict[str, Any], seed: int, where: str) -> None:
    """Raise a one-line UserError naming the point and key when `train` would refuse it."""
    from sbt_batch.cnn.config import TrainConfig

    try:
        TrainConfig.from_options({**base, **point, "seed": seed}, where)
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _absolute_files(base: dict[str, Any]) -> dict[str, Any]:
    """Signal/background globs as absolute paths, so tasks read the same files from any working directory."""
    out = dict(base)
    for key in ("signal", "background"):
        v = out.get(key)
        if v is not None:
            items = v if isinstance(v, list) else [v]
            out[key] = [str(Path(i).absolute()) if "://" not in str(i) else str(i) for i in items]
    return out


# --------------------------------------------------------------------------- submit


def task_done(run: Path) -> bool:
    """A point x seed is done when its run holds model.keras and eval/metrics.json."""
    return (run / "model.keras").is_file() and (run / "eval" / "metrics.json").is_file()


def write_sweep(sweep: Sweep) -> None:
    """Write sweep.json and every point x seed's train.yaml (kept when already there and equal)."""
    import yaml

    from sbt_batch.common.fileio import write_json_atomic, write_text_atomic

    sweep.out.mkdir(parents=True, exist_ok=True)
    old = read_sweep_json(sweep.out) if (sweep.out / SWEEP_JSON).exists() else None
    merged = sweep.to_dict()
    if old is not None:
        merged["points"] = {**old.points, **sweep.points}
        merged["seeds"] = sorted(set(old.seeds) | set(sweep.seeds), key=lambda s: (s not in sweep.seeds, s))
        merged["runs"] = list(json.loads((sweep.out / SWEEP_JSON).read_text()).get("runs", []))
    write_json_atomic(sweep.out / SWEEP_JSON, merged)
    for point in sweep.points:
        for seed in sweep.seeds:
            d = sweep.task_dir(point, seed)
            d.mkdir(parents=True, exist_ok=True)
            write_text_atomic(d / "train.yaml", yaml.safe_dump(sweep.options(point, seed), sort_keys=False))


def sweep_tasks(sweep: Sweep) -> list[Any]:
    """One task per point x seed that is not done yet (``sbt-batch sweep-point --config DIR/train.yaml``)."""
    from sbt_batch.batch.run import Task

    tasks: list[Any] = []
    for point in sweep.points:
        for seed in sweep.seeds:
            d = sweep.task_dir(point, seed)
            if task_done(d / "run"):
                continue
            argv = ["sweep-point", "--config", str(d / "train.yaml")]
            tasks.append(Task(index=len(tasks), argv=argv, outputs=[str(d / "run" / "eval" / "metrics.json")],
                              meta={"point": point, "seed": seed, "resume_argv": argv}))
    return tasks


def check_not_running(sweep_dir: Path) -> None:
    """Refuse to submit while an earlier batch run of this sweep still has queued or running tasks."""
    from sbt_batch.batch.core import run_state, run_status
    from sbt_batch.batch.run import Run

    path = sweep_dir / SWEEP_JSON
    if not path.exists():
        return
    for ref in json.loads(path.read_text()).get("runs", []):
        if not Path(ref).is_dir():
            continue
        if run_state(run_status(Run.open(ref, None))) == "active":
            raise UserError(f"{sweep_dir}: batch run {ref} of this sweep is still running; wait for it, then submit again")


def record_run(sweep_dir: Path, run_path: Path) -> None:
    """Add a batch run directory to sweep.json's list of runs."""
    from sbt_batch.common.fileio import write_json_atomic

    data = json.loads((sweep_dir / SWEEP_JSON).read_text())
    data["runs"] = [*data.get("runs", []), str(run_path)]
    write_json_atomic(sweep_dir / SWEEP_JSON, data)


# --------------------------------------------------------------------------- one task


def run_point(spec: str | Path, notify: Callable[[str], None] | None = None) -> Path:
    """One sweep task: train from ``spec`` (resume after a checkpoint, skip when trained), then evaluate.

    ``notify`` receives the training's progress lines (see :data:`sbt_batch.cnn.train.Notify`).
    """
    from sbt_batch.cnn.evaluate import evaluate_run
    from sbt_batch.cnn.train import train
    from sbt_batch.common.rundir import RunDir

    options = load_yaml(spec)
    out = options.get("out")
    if not isinstance(out, str):
        raise UserError(f"{spec}: out: expected the run directory")
    run = RunDir(Path(out))
    if not run.model.exists():
        if run.latest_checkpoint() is not None or run.config.exists():
            train(resume=str(run.path), progress=False, notify=notify)
        else:
            train(spec=spec, notify=notify)
    if not (run.eval / "metrics.json").exists():
        evaluate_run(run.path)
    return run.path


# --------------------------------------------------------------------------- report


def read_sweep_json(path: str | Path) -> Sweep:
    """The Sweep recorded in DIR/sweep.json (or a batch run of kind sweep, via its manifest)."""
    path = Path(path)
    target = path / SWEEP_JSON
    if not target.exists() and (path / "manifest.json").exists():
        from sbt_batch.batch.run import Run

        sweep_dir = Run.open(str(path), None).manifest.get("options", {}).get("sweep_dir")
        if sweep_dir:
            target = Path(sweep_dir) / SWEEP_JSON
    if not target.exists():
        raise UserError(f"{path}: not a sweep directory (no {SWEEP_JSON}) nor a sweep batch run")
    try:
        d = json.loads(target.read_text())
        return Sweep(Path(d["out"]), d["base"], d["points"], [int(s) for s in d["seeds"]], int(d.get("best", 3)))
    except (OSError, ValueError, KeyError, TypeError):
        raise InputFileError(target, "damaged sweep record (truncated or edited?)") from None


def _seed_rows(sweep: Sweep, point: str) -> list[dict[str, Any]]:
    """metrics.json (+ training seconds, scores) of every finished seed of ``point``."""
    from sbt_batch.cnn.evaluate import read_eval
    from sbt_batch.common.rundir import RunDir

    rows = []
    for seed in sweep.seeds:
        run = RunDir(sweep.task_dir(point, seed) / "run")
        if not task_done(run.path):
            continue
        m, fpr, tpr = read_eval(run)
        with np.load(run.eval / "roc.npz") as z:
            scores, labels, ids = z["scores"], z["labels"], z["ids"]
        train_s = sum(float(h.get("seconds") or 0.0) for h in run.read_history())
        rows.append({**{k: m.get(k) for k in METRICS if k != "train_seconds"}, "train_seconds": train_s, "seed": seed,
                     "scores": scores, "labels": labels, "ids": ids})
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarize_point(sweep: Sweep, point: str) -> dict[str, Any] | None:
    """Mean and std over seeds of every metric, plus the seed ensemble (average of the test scores)."""
    from sbt_batch.common.metrics import compute_metrics, roc_curve

    rows = _seed_rows(sweep, point)
    if not rows:
        return None
    out: dict[str, Any] = {"point": point, "options": sweep.points[point], "seeds": [r["seed"] for r in rows]}
    for k in METRICS:
        out[k], out[f"{k}_std"] = _mean_std([r[k] for r in rows])
    out["per_seed_auc"] = [r["auc"] for r in rows]
    ref = rows[0]
    same = all(np.array_equal(r["ids"], ref["ids"]) for r in rows)
    if same:
        mean_scores = np.mean([r["scores"] for r in rows], axis=0)
        ens = compute_metrics(ref["labels"], mean_scores)
        out["ensemble"] = {k: ens.get(k) for k in METRICS if k in ens}
        fpr, tpr = roc_curve(ref["labels"], mean_scores)
        out["_roc"] = (fpr, tpr, ens["auc"])
    else:  # a split changed between seeds: no ensemble
        out["ensemble"] = None
    return out


def sweep_report(path: str | Path, output: str | Path | None = None, allow_missing: bool = True) -> dict[str, Any]:
    """Write the comparison table (md, json, csv), baseline-error bars, best ROC curves and best.yaml."""
    sweep = read_sweep_json(path)
    summaries = [s for s in (summarize_point(sweep, p) for p in sweep.points) if s is not None]
    missing = [(p, s) for p in sweep.points for s in sweep.seeds if not task_done(sweep.task_dir(p, s) / "run")]
    if not summaries:
        raise UserError(f"{sweep.out}: no finished point yet (0 of {len(sweep.points) * len(sweep.seeds)} tasks done)")
    if missing and not allow_missing:
        raise UserError(f"{sweep.out}: {len(missing)} point x seed(s) not done (first: {missing[0][0]} seed {missing[0][1]}); "
                        "submit the sweep again to finish them")
    summaries.sort(key=lambda s: -(s["auc"] if math.isfinite(s["auc"]) else -1))
    out_dir = Path(output) if output else sweep.out / "report"
    _write_report(sweep, summaries, missing, out_dir)
    return {"output": out_dir, "points": summaries, "missing": missing}


def _fmt(mean: float, std: float, digits: int) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_markdown(summaries: list[dict[str, Any]]) -> str:
    """The comparison table in Markdown (best mean AUC first)."""
    head = ("| point | seeds | AUC | AUC per seed | accuracy | baseline error % | rej@50% | rej@80% | train s | ensemble AUC |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for s in summaries:
        ens = s.get("ensemble") or {}
        per_seed = ", ".join(f"{a:.4f}" for a in s["per_seed_auc"])
        lines.append(f"| {s['point']} | {len(s['seeds'])} | {_fmt(s['auc'], s['auc_std'], 4)} | {per_seed} | "
                     f"{_fmt(s['accuracy'], s['accuracy_std'], 4)} | {_fmt(s['baseline_error_percent'], s['baseline_error_percent_std'], 2)} | "
                     f"{_fmt(s['rejection_at_50'], s['rejection_at_50_std'], 1)} | {_fmt(s['rejection_at_80'], s['rejection_at_80_std'], 1)} | "
                     f"{_fmt(s['train_seconds'], s['train_seconds_std'], 1)} | "
                     f"{ens.get('auc', float('nan')):.4f} |")
    return head + "\n".join(lines) + "\n"


def _write_report(sweep: Sweep, summaries: list[dict[str, Any]], missing: list[tuple[str, int]], out_dir: Path) -> None:
    import csv
    import io

    import yaml

    from sbt_batch.cnn.evaluate import plot_roc
    from sbt_batch.common.fileio import staged_dir, write_json_atomic, write_text_atomic
    from sbt_batch.common.plots import atlas_label, new_figure, save_figure

    with staged_dir(out_dir) as stage:
        md = table_markdown(summaries)
        if missing:
            md += f"\n{len(missing)} point x seed(s) not done: " + ", ".join(f"{p} seed {s}" for p, s in missing[:20]) + "\n"
        write_text_atomic(stage / "sweep.md", md)
        write_json_atomic(stage / "sweep.json", [{k: v for k, v in s.items() if not k.startswith("_")} for s in summaries])
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["point", "n_seeds", *[c for k in METRICS for c in (k, f"{k}_std")], "ensemble_auc"])
        for s in summaries:
            w.writerow([s["point"], len(s["seeds"]), *[s[c] for k in METRICS for c in (k, f"{k}_std")],
                        (s.get("ensemble") or {}).get("auc")])
        write_text_atomic(stage / "sweep.csv", buf.getvalue())
        fig, ax = new_figure(figsize=(max(6, 0.9 * len(summaries) + 2), 6))
        names = [s["point"] for s in summaries]
        ax.bar(range(len(names)), [s["baseline_error_percent"] for s in summaries],
               yerr=[s["baseline_error_percent_std"] for s in summaries], color="tab:blue", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
        ax.set_ylabel("Baseline error [%]")
        ax.set_ylim(0, 1.35 * max(s["baseline_error_percent"] + s["baseline_error_percent_std"] for s in summaries) + 1e-9)
        atlas_label(ax)
        save_figure(fig, stage / "baseline_error")
        curves = [(f"{s['point']} (ensemble)", *s["_roc"]) for s in summaries[: sweep.best] if "_roc" in s]
        if curves:
            plot_roc(curves, stage / "roc_best")
        best = summaries[0]
        spec = {k: v for k, v in {**sweep.base, **best["options"]}.items() if v is not None}
        spec = {**spec, "seed": best["seeds"][0], "out": f"runs/{best['point']}"}
        text = (f"# best sweep point {best['point']}: test AUC {_fmt(best['auc'], best['auc_std'], 4)} over seeds {best['seeds']}\n"
                f"# sbt-batch train --config best.yaml\n" + yaml.safe_dump(spec, sort_keys=False))
        write_text_atomic(stage / "best.yaml", text)


def collect_sweep(run: Any, rows: Any, allow_partial: bool, output: Path | None, problems: list[Any]) -> Any:
    """Collector of batch runs of kind 'sweep': the sweep report of the run's sweep directory."""
    from sbt_batch.batch.collect import CollectResult

    sweep_dir = Path(run.manifest.get("options", {}).get("sweep_dir", ""))
    result = sweep_report(sweep_dir, output, allow_missing=allow_partial)
    display = [*summary_renderables(result), f"sweep report: {result['output']}/sweep.md, baseline_error.png, roc_best.png, best.yaml"]
    return CollectResult(None, {"points": len(result["points"])}, [], display=display)


def summary_renderables(result: dict[str, Any]) -> list[Any]:
    """The comparison table (and how many point x seeds are missing), as rich renderables for the CLI to print."""
    from rich.table import Table

    table = Table(title="sweep (test split, mean ± std over seeds)")
    for col in ("point", "seeds", "AUC", "baseline error %", "rej@50%", "rej@80%", "train s", "ensemble AUC"):
        table.add_column(col, justify="left" if col == "point" else "right", overflow="fold")
    for s in result["points"]:
        ens = s.get("ensemble") or {}
        table.add_row(s["point"], str(len(s["seeds"])), _fmt(s["auc"], s["auc_std"], 4),
                      _fmt(s["baseline_error_percent"], s["baseline_error_percent_std"], 2),
                      _fmt(s["rejection_at_50"], s["rejection_at_50_std"], 1), _fmt(s["rejection_at_80"], s["rejection_at_80_std"], 1),
                      _fmt(s["train_seconds"], s["train_seconds_std"], 1), f"{ens.get('auc', float('nan')):.4f}")
    out: list[Any] = [table]
    if result["missing"]:
        out.append(f"{len(result['missing'])} point x seed(s) not done yet")
    return out
