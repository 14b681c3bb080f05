"""Benchmark: a 10,000-task convert run on a Slurm with the default limits (MaxArraySize=1001, MaxJobCount=10000).

slurmctld refuses a job once its records would reach MaxJobCount, so an empty default controller queues at most
9,999 jobs: the 10,000-task run is *packed* (each array job runs 2 tasks, listed in a map file), and a
10,001-task run is refused in one line before anything is created (both measured).

Runs on a private second one-node cluster (``scripts/slurm-cluster.sh`` with its own base directory and
ports), so that its 10,000 job records (kept for MinJobAge) never fill the shared test cluster::

    .venv/bin/python benchmarks/submit.py [--tasks 10000]

All tasks are submitted held (``--hold``), so nothing runs; ``cancel`` then empties the queue, and the
private cluster is stopped. Writes ``benchmarks/results/submit.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SBT = [sys.executable, "-m", "sbt_batch"]
# MinJobAge=2: the record of the readiness check's `srun true` is purged before the run (10,000 tasks fill MaxJobCount)
CLUSTER = {"SBT_SLURM_BASE": "/tmp/sbt-batch-slurm-bench", "SBT_SLURM_CTLD_PORT": "6827", "SBT_SLURM_SLURMD_PORT": "6828",
           "SBT_SLURM_MIN_JOB_AGE": "2"}


def timed(argv: list[str], **kw) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command and return (seconds, result); fail loudly when it fails."""
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"{argv[:4]} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return elapsed, result


def cluster(action: str) -> subprocess.CompletedProcess[str]:
    """``scripts/slurm-cluster.sh ACTION`` for the private benchmark cluster."""
    return subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), action], capture_output=True, text=True,
                          env={**os.environ, **CLUSTER})


def queued(states: str = "PD,R,CG,S") -> int:
    """Jobs still pending or running (or in any state) on the benchmark cluster."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", states, "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3, help="status queries to time (median reported)")
    args = parser.parse_args()
    n = args.tasks

    # start-up: `submit convert --help` (it copies the options of `convert`) against `sbt-batch --help`
    t_help_submit = statistics.median(timed([*SBT, "submit", "convert", "--help"])[0] for _ in range(5))
    t_help_root = statistics.median(timed([*SBT, "--help"])[0] for _ in range(5))
    load = os.getloadavg()[0]

    cluster("stop")  # a fresh controller: no job records left from an earlier benchmark
    shutil.rmtree(Path(CLUSTER["SBT_SLURM_BASE"]) / "state", ignore_errors=True)
    shutil.rmtree(Path(CLUSTER["SBT_SLURM_BASE"]) / "etc", ignore_errors=True)
    start = cluster("start")
    if start.returncode != 0:
        sys.exit(f"benchmark Slurm did not start: {start.stderr.strip()[-500:]}")
    os.environ["SLURM_CONF"] = f"{CLUSTER['SBT_SLURM_BASE']}/etc/slurm.conf"
    deadline = time.monotonic() + 150  # slurmctld purges finished records about once a minute
    while queued("all") and time.monotonic() < deadline:
        time.sleep(1)
    limits = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    limit_lines = [line.split("=")[0].strip() + "=" + line.split("=")[1].strip() for line in limits.splitlines()
                   if line.startswith(("MaxArraySize", "MaxJobCount"))]

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
        runs = work / "runs"
        t0 = time.perf_counter()
        big = subprocess.run([*SBT, "submit", "convert", str(inputs), str(first), "-o", str(work / "out"), "--backend", "slurm",
                              "--hold", "--runs-dir", str(runs), "--name", "too-big"], capture_output=True, text=True)
        t_refuse = time.perf_counter() - t0
        refusal = big.stderr.strip()
        assert big.returncode != 0 and len(refusal.splitlines()) == 1 and not runs.exists(), big.stderr
        t_submit, res = timed([*SBT, "submit", "convert", str(inputs), "-o", str(work / "out"), "--backend", "slurm",
                               "--hold", "--runs-dir", str(runs), "--name", "bench", "--eta-max", "2.7"])
        run_dir = next(p for p in runs.iterdir() if not p.name.startswith("."))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        arrays = manifest["submissions"][0]["backend"]["arrays"]
        pack = manifest["submissions"][0]["backend"].get("pack", 1)
        t_status_json = statistics.median(timed([*SBT, "status", str(run_dir), "--json"])[0] for _ in range(args.repeats))
        t_status_table, table = timed([*SBT, "status", str(run_dir)])
        summary = table.stdout.strip().splitlines()[-1]
        in_queue = queued()
        t_cancel, _ = timed([*SBT, "cancel", str(run_dir)])
        deadline = time.monotonic() + 30
        while queued() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = queued()
        after = timed([*SBT, "status", str(run_dir)])[1].stdout.strip().splitlines()[-1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cluster("stop")

    lines = [
        "# Benchmark: a 10,000-task run on Slurm's default limits",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; machine: {os.cpu_count()} CPUs ({cpu_model()}), shared with other work",
        f"- command: `.venv/bin/python benchmarks/submit.py --tasks {n}`; Slurm 22.05, a private one-node cluster from "
        f"`scripts/slurm-cluster.sh` with the defaults: {', '.join(limit_lines)}",
        "- the run: `sbt-batch submit convert INPUTS(10,000 files) -o OUT --backend slurm --hold --eta-max 2.7`; nothing runs (held)",
        "- timings of `sbt-batch` commands are whole CLI processes (Python start-up included)",
        "",
        "| what | value | target |",
        "|---|---:|---:|",
        f"| `sbt-batch submit convert` of {n + 1} tasks: refused in one line, nothing created | {t_refuse:.2f} s | |",
        f"| `sbt-batch submit convert` of {n} tasks (one `scontrol show config`, {len(arrays)} arrays of <= 1001 jobs, "
        f"{pack} task(s) per job) | {t_submit:.2f} s | < 3 s |",
        f"| `sbt-batch status --json` on {n} held tasks (median of {args.repeats}) | {t_status_json:.2f} s | < 2 s |",
        f"| `sbt-batch status` (table) | {t_status_table:.2f} s | < 2 s |",
        f"| jobs in the queue after submit | {in_queue} | <= 9999 |",
        f"| `sbt-batch cancel` | {t_cancel:.2f} s | |",
        f"| jobs pending or running after cancel | {left} | 0 |",
        f"| `sbt-batch submit convert --help` (median of 5; `sbt-batch --help`: {t_help_root:.2f} s) | {t_help_submit:.2f} s | < 0.5 s |",
        f"| load average when the benchmark started (2 cores) | {load:.1f} | |",
        "",
        f"- status after submit: `{summary}`; after cancel: `{after}`",
        f"- the {n + 1}-task run: `{refusal}`",
        "- arrays (job id+offset:tasks): " + ", ".join(f"{a['job_id']}+{a['offset']}:{a['count']}" for a in arrays),
        "",
    ]
    text = "\n".join(lines)
    out = REPO / "benchmarks" / "results" / "submit.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
