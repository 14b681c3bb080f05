"""Benchmark: training images/s on 2 Horovod ranks divided by images/s on 1 rank (CPU, this machine).

Run:  .venv/bin/python benchmarks/horovod.py [--epochs 4] [--repeats 3] [--launchers gloo,mpi] [--data ../shared/data/gfex-hdf5]
Writes benchmarks/results/horovod.md. Each configuration runs ``sbt-batch train`` as a user would
(``--ranks 2 --launcher L`` for two ranks); images/s is the mean over epochs 2.. (epoch 1 includes
tf.function tracing) of history.json's ``images_per_s`` (all ranks together). A report, not a target:
2 ranks share the same 2 cores, so the ratio shows the cost of gradient averaging, not a speed-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "horovod.md"


def train_once(data: Path, out: Path, epochs: int, ranks: int, launcher: str) -> dict[str, float]:
    """Run one training; return images/s (mean of epochs 2..), wall seconds and the last val_accuracy."""
    from sbt_batch.cnn.launch import rank_env

    cmd = [sys.executable, "-m", "sbt_batch", "train", "--signal", str(data / "*ZvvHbb*.hdf5"),
           "--background", str(data / "*JZ0W*.hdf5"), "--model", "2c2m", "--seed", "1", "--split", "0.5,0.1,0.4",
           "--epochs", str(epochs), "--no-progress", "--cache", "memory", "--out", str(out)]
    if ranks > 1:
        cmd += ["--ranks", str(ranks), "--launcher", launcher]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=rank_env(ranks), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    hist = json.loads((out / "history.json").read_text())
    rates = [h["images_per_s"] for h in hist[1:] if h.get("images_per_s")]
    return {"img_s": sum(rates) / len(rates), "wall": wall, "val_acc": hist[-1]["val_accuracy"]}


def main() -> None:
    """Measure and write the markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--launchers", default="gloo,mpi")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "gfex-hdf5")
    ap.add_argument("--repeats", type=int, default=1, help="Interleaved repeats; the median run per configuration is kept.")
    args = ap.parse_args()
    configs = [("1 rank", 1, "")] + [(f"2 ranks ({x})", 2, x) for x in args.launchers.split(",") if x]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, ranks, launcher in configs:
                results[name].append(train_once(args.data, Path(tmp) / f"r{rep}{ranks}{launcher}", args.epochs, ranks, launcher))
    rows = [(name, sorted(runs, key=lambda m: m["img_s"])[len(runs) // 2]) for name, runs in results.items()]
    one = rows[0][1]
    load = os.getloadavg()[0]
    lines = [
        "# Horovod: 2 ranks vs 1 rank (CPU)",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores ({cpu_model()}), "
        f"load average {load:.1f} at the end (shared with other jobs)",
        f"- command: `.venv/bin/python benchmarks/horovod.py --epochs {args.epochs} --launchers {args.launchers} "
        f"--repeats {args.repeats}` (median of {args.repeats} interleaved runs per configuration)",
        "- model 2c2m, batch 64 per rank, 1000 training events of the real gFEX data, in-memory cache;"
        " images/s = mean of epochs 2.. (all ranks together)",
        "",
        "| configuration | images/s | ratio to 1 rank | wall s (incl. start-up) | last val_accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['img_s']:,.0f} | {m['img_s'] / one['img_s']:.2f} | {m['wall']:.1f} | {m['val_acc']:.3f} |")
    spread = "; ".join(name + ": " + ", ".join(f"{m['img_s']:.0f}" for m in runs) for name, runs in results.items())
    lines += ["", f"Spread over the repeats (images/s): {spread}", "",
              "GPU measurements (1-GPU images/s and utilization, whether the HDF5 stream keeps the GPU fed,",
              "streaming vs in-memory) could not be taken: no GPU machine was lent to this session.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from sbt_batch.common.fileio import write_text_atomic

    write_text_atomic(RESULTS, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
