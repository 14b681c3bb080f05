"""Benchmark: a sweep as one job array (local backend, and the test Slurm when it answers) vs the same trainings one after another.

Both sides do the same work: every point x seed of the sweep config trains (``sbt-batch train --config
its train.yaml``) and evaluates. The sequential side runs ``sbt-batch train`` then ``sbt-batch evaluate``
per point x seed in this process's order; the sweep side is ``sbt-batch sweep`` and then waits until the
array settles (and collects). The default config is a reduced sweep (the shipped one takes about an hour
on 2 cores); ``--config jobs/sweep-gfex.yaml`` times the shipped one::

    nice -n 10 .venv/bin/python benchmarks/sweep.py [--config CFG] [--slurm] [--results runs/sweep-gfex]

``--results SWEEP_DIR`` adds the comparison table of a finished sweep (``sbt-batch sweep-report``) to the
output, benchmarks/results/sweep.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SBT = [sys.executable, "-m", "sbt_batch"]
REDUCED = {
    "train": {"signal": [str(REPO.parent / "shared/data/gfex-hdf5/*ZvvHbb*.hdf5")],
              "background": [str(REPO.parent / "shared/data/gfex-hdf5/*JZ0W*.hdf5")],
              "split": "0.5,0.1,0.4", "split_seed": 1, "epochs": 3},
    "grid": {"model": ["2c2m"]},
    "points": [{"model": "2c2m", "padding": "circular", "augment": "full", "tta": "eta"}],
    "seeds": [1, 2],
}


def sbt(*args: object, env: dict[str, str] | None = None) -> float:
    """Run ``sbt-batch ARGS`` and return its wall seconds (exit on failure)."""
    t0 = time.perf_counter()
    r = subprocess.run([*SBT, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env)
    if r.returncode != 0:
        sys.exit(f"sbt-batch {' '.join(map(str, args[:3]))} failed: {(r.stderr or r.stdout).strip()[-400:]}")
    return time.perf_counter() - t0


def wait_settled(run_path: Path, env: dict[str, str] | None, timeout: float = 7200) -> None:
    """Poll the run until no task is queued or running."""
    from sbt_batch.batch.core import run_status
    from sbt_batch.batch.run import Run

    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        deadline = time.monotonic() + timeout
        while any(r.active for r in run_status(Run.open(run_path))):
            if time.monotonic() > deadline:
                sys.exit(f"{run_path}: not settled after {timeout} s")
            time.sleep(2)
    finally:
        os.environ.clear()
        os.environ.update(old)


def config(base: dict, out: Path) -> Path:
    """Write the sweep config with its out: in ``out``."""
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump({**base, "out": str(out / "sweep")}, sort_keys=False))
    return path


def time_sweep(base: dict, work: Path, backend: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds from `sbt-batch sweep` to the collected report, and the number of tasks."""
    from sbt_batch.cnn.sweep import load_sweep

    cfg = config(base, work)
    n = len(load_sweep(cfg).points) * len(load_sweep(cfg).seeds)
    runs = work / "runs"
    t0 = time.perf_counter()
    sbt("sweep", "--config", cfg, "--backend", backend, "--runs-dir", runs, env=env)
    run_path = next(runs.iterdir())
    wait_settled(run_path, env)
    sbt("collect", run_path, env=env)
    return time.perf_counter() - t0, n


def time_sequential(base: dict, work: Path) -> float:
    """Wall seconds of the same trainings and evaluations, one after another with `sbt-batch train`."""
    from sbt_batch.cnn.sweep import load_sweep, write_sweep

    sweep = load_sweep(config(base, work))
    write_sweep(sweep)  # the same train.yaml files the tasks use
    t0 = time.perf_counter()
    for point in sweep.points:
        for seed in sweep.seeds:
            d = sweep.task_dir(point, seed)
            sbt("train", "--config", d / "train.yaml")
            sbt("evaluate", d / "run")
    return time.perf_counter() - t0


def slurm_env() -> dict[str, str] | None:
    """The test cluster's environment when it answers (scripts/slurm-cluster.sh), else None."""
    r = subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "env"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    env = dict(os.environ)
    for line in r.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip("'\"")
    ok = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=env)
    return env if ok.returncode == 0 and "UP" in ok.stdout else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="sweep config (default: a reduced sweep of 2 points x 2 seeds, 3 epochs)")
    ap.add_argument("--slurm", action="store_true", help="also time the sweep on the test Slurm")
    ap.add_argument("--results", type=Path, help="a finished sweep directory whose table goes into the output")
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "sweep.md")
    args = ap.parse_args()
    base = REDUCED
    if args.config:
        base = {k: v for k, v in yaml.safe_load(args.config.read_text()).items() if k != "out"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="sbt-sweep-bench-", dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
        work = Path(tmp)
        (work / "seq").mkdir()
        seq = time_sequential(base, work / "seq")
        (work / "local").mkdir()
        local, n = time_sweep(base, work / "local", "local")
        rows.append(("local (one array, 2 tasks at a time on 2 cores)", local))
        if args.slurm:
            env = slurm_env()
            if env is None:
                rows.append(("slurm: test cluster not running (bash scripts/slurm-cluster.sh start)", float("nan")))
            else:
                (work / "slurm").mkdir()
                rows.append(("slurm (test one-node cluster, 2 CPUs)", time_sweep(base, work / "slurm", "slurm", env)[0]))
    lines = [
        "# Sweep: one job array vs the same trainings one after another",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} CPUs (shared with other work; nice -n 10).",
        f"Config: {args.config or 'reduced sweep: 2c2m, 2c2m circular+augment full+tta eta; 3 epochs; seeds 1, 2'}; "
        f"{n} point x seed tasks, each `sbt-batch train` + `evaluate` on 1,000 train / 200 val / 800 test real events.",
        "",
        "| how | wall s | sequential / this |",
        "|---|---|---|",
        f"| sequential `sbt-batch train` + `evaluate` | {seq:.1f} | 1.00 |",
        *[f"| {name} | {t:.1f} | {seq / t:.2f} |" for name, t in rows],
        "",
    ]
    if args.results:
        table = (args.results / "report" / "sweep.md")
        if not table.exists():
            sbt("sweep-report", args.results)
        lines += ["## Shipped sweep (jobs/sweep-gfex.yaml): test metrics, mean ± std over seeds", "", table.read_text()]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
