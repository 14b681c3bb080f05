"""Benchmark: submitting a 1,000-task convert run as ONE Slurm array vs 1,000 separate sbatch calls; status of 1,000 tasks.

Run against the local Slurm cluster (started if needed)::

    .venv/bin/python benchmarks/submit.py [--tasks 1000]

All jobs are submitted held (``--hold``) and cancelled afterwards, so nothing runs.
Writes ``benchmarks/results/submit.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
SBT = [sys.executable, "-m", "sbt_batch"]


def timed(argv: list[str], **kw) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command and return (seconds, result); fail loudly when it fails."""
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"{argv[:4]} failed: {result.stderr.strip()[-500:]}")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="status queries to time (median reported)")
    args = parser.parse_args()
    n = args.tasks

    start = subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "start"], capture_output=True, text=True)
    if start.returncode != 0:
        sys.exit(f"local Slurm did not start: {start.stderr.strip()}")
    os.environ["SLURM_CONF"] = subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "env"], capture_output=True,
                                              text=True).stdout.strip().split("=", 1)[1]

    work = Path(tempfile.mkdtemp(prefix="sbt-bench-submit-"))
    try:
        # n tiny inputs: hard links of one small sample ntuple (the tasks never run: submitted held)
        sample = work / "sample"
        timed([*SBT, "sample-ntuples", str(sample), "--kind", "signal", "--files", "1", "--events", "10"])
        first = next(sample.glob("*.root"))
        inputs = work / "inputs"
        inputs.mkdir()
        for i in range(n):
            os.link(first, inputs / f"in_{i:05d}.root")

        # 1. sbt-batch submit: one sbatch --array call (whole CLI process, as a user runs it)
        runs = work / "runs"
        t_submit, _ = timed([*SBT, "submit", "convert", str(inputs), "-o", str(work / "out"), "-k", "1", "--backend", "slurm",
                             "--hold", "--runs-dir", str(runs), "--name", "bench"])
        run_dir = next(runs.iterdir())

        # 2. one status query over n unfinished tasks (whole CLI process; JSON and table output)
        t_status_json = statistics.median(timed([*SBT, "status", str(run_dir), "--json"])[0] for _ in range(args.repeats))
        t_status_table = statistics.median(timed([*SBT, "status", str(run_dir)])[0] for _ in range(args.repeats))

        # the same through the library, in this process (no interpreter start-up): submit + one status
        sys.path.insert(0, str(REPO))
        from sbt_batch.batch.core import run_status
        from sbt_batch.batch.kinds import convert_tasks
        from sbt_batch.batch.run import Run
        from sbt_batch.batch.submit import SubmitOptions, resolve_inputs, submit_new_run

        files = resolve_inputs([str(inputs)])
        t0 = time.perf_counter()
        lib_run = submit_new_run("convert", lambda _s: convert_tasks(files, 1, work / "out2"),
                                 SubmitOptions(backend="slurm", hold=True, runs_dir=runs, name="bench-lib"),
                                 {"make_dirs": [str(work / "out2" / "parts")]})
        t_submit_lib = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = run_status(Run.open(lib_run.path))
        t_status_lib = time.perf_counter() - t0
        assert len(rows) == n and all(r.state == "held" for r in rows), {r.state for r in rows}
        subprocess.run([*SBT, "cancel", str(lib_run.path)], capture_output=True)

        # the scheduler call alone: one sbatch --array of n held jobs
        script = work / "true.sh"
        script.write_text("#!/bin/sh\ntrue\n")
        t_array, res = timed(["sbatch", "--parsable", "--hold", f"--array=0-{n - 1}", "-o", "/dev/null", str(script)])
        array_ids = [res.stdout.strip().split(";")[0]]

        # 3. n separate sbatch calls
        ids = []
        t0 = time.perf_counter()
        for _ in range(n):
            r = subprocess.run(["sbatch", "--parsable", "--hold", "-o", "/dev/null", str(script)], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"sbatch failed: {r.stderr.strip()}")
            ids.append(r.stdout.strip().split(";")[0])
        t_separate = time.perf_counter() - t0
    finally:
        subprocess.run([*SBT, "cancel", str(run_dir)], capture_output=True) if "run_dir" in locals() else None
        for chunk in range(0, len(locals().get("ids", [])), 200):
            subprocess.run(["scancel", *ids[chunk:chunk + 200]], capture_output=True)
        if locals().get("array_ids"):
            subprocess.run(["scancel", *array_ids], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    t_user = t_submit + t_status_json
    lines = [
        "# Benchmark: batch submit and status (local Slurm)",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; machine: {os.cpu_count()} CPUs ({cpu_model()}), shared with other work",
        f"- command: `.venv/bin/python benchmarks/submit.py --tasks {n}`; Slurm 22.05 one-node cluster from `scripts/slurm-cluster.sh`",
        "- all jobs submitted held and cancelled afterwards; timings of `sbt-batch` commands include Python start-up",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| `sbt-batch submit convert` of {n} tasks (run dir, manifest, ONE `sbatch --array`) | {t_submit:.2f} |",
        f"| `sbt-batch status --json` on {n} held tasks (median of {args.repeats}) | {t_status_json:.2f} |",
        f"| `sbt-batch status` (table) on {n} held tasks (median of {args.repeats}) | {t_status_table:.2f} |",
        f"| `submit_new_run()` library call, {n} tasks (same work as the CLI, no interpreter start-up) | {t_submit_lib:.3f} |",
        f"| `run_status()` library call on {n} tasks (one `squeue`) | {t_status_lib:.3f} |",
        f"| one `sbatch --array=0-{n - 1}` call alone | {t_array:.3f} |",
        f"| {n} separate `sbatch` calls | {t_separate:.2f} |",
        "",
        "| ratio (same run) | value | target |",
        "|---|---:|---:|",
        f"| {n} separate sbatch / one array sbatch call | {t_separate / t_array:.0f}x | >= 20x |",
        f"| {n} separate sbatch / (library submit + one status, in process) | {t_separate / (t_submit_lib + t_status_lib):.0f}x | >= 20x |",
        f"| {n} separate sbatch / (`sbt-batch submit` + one `sbt-batch status`, two CLI processes) | {t_separate / t_user:.1f}x | |",
        f"| `sbt-batch status` on {n} tasks | {t_status_json:.2f} s | < 2 s |",
        "",
    ]
    text = "\n".join(lines)
    out = REPO / "benchmarks" / "results" / "submit.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
