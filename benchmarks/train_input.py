"""Benchmark the gFEX training input pipeline and the five models.

Measured in one run (each phase in a fresh child process, so peak RSS is per phase):

1. throughput: images/s of the training step (``sbt_batch.cnn.train.make_steps``) fed by the tf.data
   pipeline streaming from HDF5, divided by images/s when fed from in-memory numpy arrays (all
   train images loaded first, the notebook's approach); same model (2c2m) and batch size; paired
   segments on the same events, alternating which goes first, so load on a shared machine cancels.
2. rss: peak RSS while training one full epoch on a synthetic HDF5 dataset of ``--gb`` GB
   (real events tiled with random per-event scale factors, written to /tmp and deleted afterwards).
3. auc: test AUC on the real data (split 0.5,0.1,0.4) for each of the five models, 3 seeds.

Command: ``.venv/bin/python benchmarks/train_input.py`` (writes benchmarks/results/train_input.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("SBT_BATCH_SHARED", REPO.parent / "shared")) / "data" / "gfex-hdf5"
MODELS = ["1c", "2c", "1c1m", "2c2m", "2c2m-dropout"]


def real_files() -> tuple[list[str], list[str]]:
    return sorted(map(str, REAL.glob("*ZvvHbb*.hdf5"))), sorted(map(str, REAL.glob("*JZ0W*.hdf5")))


def make_synthetic(folder: Path, gb: float, files_per_class: int) -> tuple[list[str], list[str]]:
    """Write ``gb`` GB of gTowerEt (N, 28, 32) float32: real events tiled, each scaled by U(0.8, 1.25)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    sig_files, bkg_files = real_files()
    pools = {c: np.concatenate([h5py.File(f)["gTowerEt"][:] for f in fs]) for c, fs in (("sig", sig_files), ("bkg", bkg_files))}
    per_event = 28 * 32 * 4
    n_file = int(gb * 1e9 / per_event / (2 * files_per_class))
    rng = np.random.default_rng(0)
    out: dict[str, list[str]] = {"sig": [], "bkg": []}
    chunk = 16384
    for c, pool in pools.items():
        for i in range(files_per_class):
            path = folder / f"{c}_{i:03d}.h5"
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("gTowerEt", shape=(n_file, 28, 32), dtype=np.float32, chunks=(256, 28, 32))
                f.create_dataset("offlineRho", data=np.zeros(n_file, np.float32))
                for lo in range(0, n_file, chunk):
                    n = min(chunk, n_file - lo)
                    idx = rng.integers(0, len(pool), n)
                    ds[lo : lo + n] = pool[idx] * rng.uniform(0.8, 1.25, (n, 1, 1)).astype(np.float32)
            out[c].append(str(path))
    return out["sig"], out["bkg"]


def child(phase: str, args: argparse.Namespace) -> dict:
    """Run one phase in this process and return its figures (with this process's peak RSS)."""
    from sbt_batch.cnn.train import train

    work = Path(args.work)
    result: dict = {}
    if phase == "throughput":
        import keras

        from sbt_batch.cnn import prepare as D
        from sbt_batch.cnn import stream as DS
        from sbt_batch.cnn.context import SingleProcess
        from sbt_batch.cnn.models import build_model
        from sbt_batch.cnn.train import make_steps

        sig, bkg = json.loads(args.files)
        bs = args.batch_size
        keras.utils.set_random_seed(1)
        index = D.EventIndex(D.open_sources(sig, bkg))
        split = D.make_split(index.n, (0.9, 0.05, 0.05), 1)
        prep = D.Preprocess(list(range(26)), "standardize")
        streams = {"stream": DS.EventStream(index, prep), "memory": DS.EventStream(index, prep)}
        prep.mean, prep.std = DS.compute_standardize(streams["stream"], split["train"])
        streams["memory"].load_cache(split["train"])  # the notebook's approach: all train images in RAM first
        model = build_model("2c2m", prep.input_shape)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        train_step, _ = make_steps(model, optimizer, prep.input_shape, "softmax", SingleProcess())
        window = DS.window_events(streams["stream"], bs, 64)
        order = DS.epoch_order(split["train"], 1, 0, window)
        for x, y, w in DS.make_tf_dataset(streams["memory"], order[: 2 * bs], bs):  # trace once
            train_step(x, y, w)
        seg = bs * args.steps
        rates: dict[str, list[float]] = {"memory": [], "stream": []}
        cpu: dict[str, list[float]] = {"memory": [], "stream": []}
        for i in range(args.reps):
            ids = order[(i * seg) % (len(order) - seg) :][:seg]
            for mode in ("memory", "stream") if i % 2 == 0 else ("stream", "memory"):
                t0, c0 = time.perf_counter(), time.process_time()
                n = 0
                for x, y, w in DS.make_tf_dataset(streams[mode], ids, bs):
                    loss, _ = train_step(x, y, w)
                    n += int(y.shape[0])
                float(loss)
                rates[mode].append(n / (time.perf_counter() - t0))
                cpu[mode].append(n / (time.process_time() - c0))
        # CPU cost of the input side alone, per image: HDF5 read + normalization vs a gather from RAM
        c0 = time.process_time()
        for i in range(4):
            streams["stream"].read(order[i * window : (i + 1) * window])
        c1 = time.process_time()
        for i in range(4):
            streams["memory"].read(order[i * window : (i + 1) * window])
        c2 = time.process_time()
        result = {"rates": rates, "cpu": cpu, "input_us": {"stream": (c1 - c0) / (4 * window) * 1e6,
                                                          "memory": (c2 - c1) / (4 * window) * 1e6}}
    elif phase == "rss":
        if args.rss_model == "bench-linear":  # a benchmark-only model, added through the registry
            from sbt_batch.cnn.models import register

            register("bench-linear", "flatten + dense: makes the epoch input-bound")(lambda keras: [keras.layers.Flatten()])
        sig, bkg = json.loads(args.files)
        out = work / "rss-run"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = train(signal=sig, background=bkg, model=args.rss_model, out=str(out), epochs=1, batch_size=args.rss_batch,
                    split="0.98,0.01,0.01", rows="0:26", cache="stream", seed=1, progress=False)
        result = {"history": res.history, "seconds": time.perf_counter() - t0,
                  "events": json.loads(json.dumps(__import__("yaml").safe_load((out / "config.yaml").read_text())["events"]))}
        shutil.rmtree(out, ignore_errors=True)
    elif phase == "auc":
        from sbt_batch.cnn.evaluate import evaluate_run

        sig, bkg = real_files()
        aucs: dict[str, list[float]] = {}
        for model in MODELS:
            for seed in range(1, args.seeds + 1):
                out = work / f"auc-{model}-{seed}"
                shutil.rmtree(out, ignore_errors=True)
                train(signal=sig, background=bkg, model=model, out=str(out), epochs=args.epochs, seed=seed,
                      split="0.5,0.1,0.4", progress=False)
                aucs.setdefault(model, []).append(evaluate_run(out, plots=False)["auc"])
                shutil.rmtree(out, ignore_errors=True)
                print(f"  {model} seed {seed}: AUC {aucs[model][-1]:.4f}", file=sys.stderr, flush=True)
        result = {"aucs": aucs}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(phase: str, argv: list[str]) -> dict:
    """Run a phase in a fresh Python process; return its JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--phase", phase, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["throughput", "rss", "auc"])
    ap.add_argument("--work", default="/tmp/sbt-bench-train")
    ap.add_argument("--files", default="")
    ap.add_argument("--gb", type=float, default=10.0, help="synthetic dataset size for the RSS phase")
    ap.add_argument("--tp-gb", type=float, default=0.5, help="synthetic dataset size for the throughput phase")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="steps per timed segment in the throughput phase")
    ap.add_argument("--reps", type=int, default=8, help="memory/stream segment pairs in the throughput phase")
    ap.add_argument("--rss-model", default="bench-linear", help="model for the RSS epoch (bench-linear: input-bound)")
    ap.add_argument("--rss-batch", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--skip", default="", help="comma list of phases to skip")
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(child(args.phase, args)))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--work", str(work), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--reps", str(args.reps),
              "--rss-model", args.rss_model, "--rss-batch", str(args.rss_batch), "--seeds", str(args.seeds),
              "--epochs", str(args.epochs)]
    skip = set(args.skip.split(","))
    lines = [f"# benchmarks/train_input.py -- {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}", "",
             f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; shared with other jobs, so absolute rates are noisy.",
             f"Command: `.venv/bin/python benchmarks/train_input.py {' '.join(sys.argv[1:])}`".rstrip(), ""]
    t_all = time.perf_counter()
    if "throughput" not in skip:
        files = make_synthetic(work / "tp", args.tp_gb, 1)
        r = run_child("throughput", common + ["--files", json.dumps(files)])
        shutil.rmtree(work / "tp", ignore_errors=True)
        pairs = [a / b for a, b in zip(r["rates"]["stream"], r["rates"]["memory"])]
        pairs_cpu = [a / b for a, b in zip(r["cpu"]["stream"], r["cpu"]["memory"])]
        med = {k: statistics.median(v) for k, v in r["rates"].items()}
        cpu = {k: statistics.median(v) for k, v in r["cpu"].items()}
        lines += ["## Streaming from HDF5 vs in-memory numpy (same training step: model 2c2m, batch size "
                  f"{args.batch_size}; {args.reps} pairs of {args.steps}-step segments, each pair on the same events, "
                  "order alternated)", "",
                  "| source | images/s wall (median) | images per CPU-second (median) | input-side CPU per image |",
                  "|---|---|---|---|"]
        for key, label in (("memory", "in-memory numpy (all train images loaded first)"), ("stream", "HDF5 streaming (tf.data)")):
            lines.append(f"| {label} | {med[key]:,.0f} | {cpu[key]:,.0f} | {r['input_us'][key]:.1f} us |")
        lines += ["", f"Paired ratios stream / memory (wall): {', '.join(f'{v:.3f}' for v in pairs)}", "",
                  f"**Ratio stream / memory: {statistics.median(pairs):.3f} (wall, median of pairs), "
                  f"{statistics.median(pairs_cpu):.3f} (per CPU-second)** (target >= 0.95). Synthetic {args.tp_gb} GB "
                  "file, in the OS page cache. Reading and normalizing from HDF5 costs "
                  f"{r['input_us']['stream']:.1f} us of CPU per image against {1e6 / cpu['memory']:.0f} us for the "
                  "training step itself.", ""]
    if "rss" not in skip:
        t0 = time.perf_counter()
        files = make_synthetic(work / "rss", args.gb, 4)
        size = sum(Path(p).stat().st_size for p in files[0] + files[1]) / 1e9
        gen = time.perf_counter() - t0
        r = run_child("rss", common + ["--files", json.dumps(files)])
        shutil.rmtree(work / "rss", ignore_errors=True)
        h = r["history"][0]
        lines += [f"## Peak RSS, one epoch on a synthetic {size:.1f} GB HDF5 dataset (8 files, written in {gen:.0f} s)", "",
                  f"Model {args.rss_model}, batch {args.rss_batch}, split 0.98/0.01/0.01, rows 0:26, cache=stream: "
                  f"{r['events']['train']:,} train events in {h['seconds']:.0f} s ({h['images_per_s']:,.0f} img/s), "
                  f"then validation on {r['events']['val']:,}; whole run {r['seconds']:.0f} s.", "",
                  f"**Peak RSS: {r['peak_rss_mb']:,.0f} MB** (target < 2048 MB; the dataset is {size:.1f} GB).", ""]
    if "auc" not in skip:
        r = run_child("auc", common)
        lines += [f"## Test AUC on the real data, {args.seeds} seeds (split 0.5,0.1,0.4: 1000 train, 800 test events; "
                  f"{args.epochs} epochs, defaults: adam 1e-3, standardize, batch 64)", "",
                  "| model | AUC per seed | mean | std |", "|---|---|---|---|"]
        for m, v in r["aucs"].items():
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            lines.append(f"| {m} | {', '.join(f'{a:.4f}' for a in v)} | {statistics.mean(v):.4f} | {sd:.4f} |")
        lines.append("")
    lines.append(f"Total benchmark time: {time.perf_counter() - t_all:.0f} s.")
    out = REPO / "benchmarks" / "results" / "train_input.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
