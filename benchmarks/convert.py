"""Benchmark of ``sbt-batch convert``: throughput against a bare uproot read, scaling, memory, start-up.

    .venv/bin/python benchmarks/convert.py [--files 20] [--events 5000] [--big-gb 2] [--workdir DIR]

Writes benchmarks/results/convert.md. Every ratio is measured within this one run, repeated
``--repeats`` times with the measurements interleaved, and the best time of each is used (the
machine is shared, so the minimum is the least disturbed measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model

from sbt_batch.convert.cluster import WORKER_CONFIG
from sbt_batch.convert.driver import convert
from sbt_batch.convert.names import ET_BRANCH, RHO_BRANCH
from sbt_batch.convert.samples import generate_events, tower_map, write_ntuple
from sbt_batch.convert.source import scan_input

COMPRESSIONS = ("zlib:1", "lz4:1")


def machine() -> str:
    model = cpu_model()
    return f"{os.cpu_count()} cores (`nproc`={len(os.sched_getaffinity(0))}), {model}, Python {platform.python_version()}"


def default_outdir() -> Path:
    """tmpfs when there is one: the bare read writes nothing, so convert's output should not wait on the disk."""
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")) / "sbt-bench-convert-out"


def dirty_limit() -> str:
    """The kernel's dirty page-cache limit, which throttles writers to the disk's speed once exceeded."""
    try:
        limit = int(Path("/proc/sys/vm/dirty_bytes").read_text())
        return f"{limit / 1e6:.0f} MB" if limit else f"{Path('/proc/sys/vm/dirty_ratio').read_text().strip()} % of RAM"
    except OSError:
        return "unknown"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def make_inputs(workdir: Path, files: int, events: int, basket: int) -> dict[str, list[Path]]:
    """The same events written with each compression (cached between runs)."""
    eta, phi, _ = tower_map()
    out: dict[str, list[Path]] = {c: [] for c in COMPRESSIONS}
    for i in range(files):
        paths = {c: workdir / c.split(":")[0] / f"f{i:03d}.root" for c in COMPRESSIONS}
        if not all(p.exists() for p in paths.values()):
            kind = "signal" if i % 2 else "background"
            et, rho = generate_events(kind, events, np.random.default_rng([99, i]))
            for c, p in paths.items():
                p.parent.mkdir(parents=True, exist_ok=True)
                write_ntuple(p, et, rho, eta, phi, compression=c, basket_events=basket)
        for c, p in paths.items():
            out[c].append(p)
    return out


def set_inflate(library: str) -> None:
    import uproot.compression as uc

    uc._decompress_ZLIB.library = library


class Clock:
    """Wall and CPU time (this process) of a block: ``with Clock() as c: ...; c.wall, c.cpu``."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0

    @property
    def both(self) -> tuple[float, float]:
        return self.wall, self.cpu


def bare_read(files: list[Path]) -> tuple[float, float]:
    """uproot's own read of the two branches, nothing else; (wall, cpu) seconds."""
    import uproot

    with Clock() as c:
        for f in files:
            with uproot.open(f) as rf:
                rf["mytree"].arrays([ET_BRANCH, RHO_BRANCH], library="np")
    return c.both


def original(files: list[Path], out: Path, index: np.ndarray | None = None) -> tuple[float, float]:
    """The original gFEXtuple2hdf5 way: whole file in memory, one file at a time, h5py resize + append."""
    import h5py
    import uproot

    if index is None:
        index = scan_input(files[0]).grid.index
        set_inflate("zlib")
    clock = Clock().__enter__()
    with h5py.File(out, "w") as h5:
        ds = rho_ds = None
        for f in files:
            with uproot.open(f) as rf:
                a = rf["mytree"].arrays([ET_BRANCH, RHO_BRANCH], library="np")
            et = a[ET_BRANCH][:, index].reshape(-1, 24, 32)
            if ds is None:
                ds = h5.create_dataset("gTowerEt", data=et, maxshape=(None, 24, 32))
                rho_ds = h5.create_dataset("offlineRho", data=a[RHO_BRANCH], maxshape=(None,))
            else:
                n = ds.shape[0]
                ds.resize(n + len(et), axis=0)
                ds[n:] = et
                rho_ds.resize(n + len(et), axis=0)
                rho_ds[n:] = a[RHO_BRANCH]
    clock.__exit__()
    return clock.both


def timed_convert(files: list[Path], out: Path, **kw) -> tuple[float, float]:
    with Clock() as c:
        convert(files, out, **kw)
    return c.both


def throughput(inputs: dict[str, list[Path]], outdir: Path, repeats: int, events: int) -> dict:
    results: dict = {}
    for comp, files in inputs.items():
        name = comp.split(":")[0]
        times: dict[str, list[float]] = {k: [] for k in ("bare", "bare_isal", "convert", "convert_nocomp", "original")}
        index = scan_input(files[0]).grid.index
        for _ in range(repeats):
            set_inflate("zlib")  # uproot's default
            times["bare"].append(bare_read(files))
            set_inflate("isal")
            times["bare_isal"].append(bare_read(files))
            times["convert"].append(timed_convert(files, outdir / "out.h5", workers=1))
            times["convert_nocomp"].append(timed_convert(files, outdir / "out-nocomp.h5", workers=1, level=None))
            set_inflate("zlib")  # the original tool used uproot's (or ROOT's) default zlib
            times["original"].append(original(files, outdir / "orig.h5", index))
        best = {k: min(w for w, _ in v) for k, v in times.items()}
        cpu = {k: min(c for _, c in v) for k, v in times.items()}
        results[name] = {"events": events, "best_s": best, "cpu_s": cpu, "all_s": times,
                         "out_mb": (outdir / "out.h5").stat().st_size / 1e6,
                         "in_mb": sum(f.stat().st_size for f in files) / 1e6}  # fmt: skip
    set_inflate("zlib")
    return results


def _worker_cpu(client) -> float:
    def cpu() -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    return sum(client.run(cpu).values())


def scaling(files: list[Path], outdir: Path, repeats: int) -> dict:
    """1 worker against 2 dask workers: on running clusters (--scheduler), and with the cluster started by convert.

    The same dask code path with 1 and with 2 workers is the scaling figure; the in-process
    conversion (what ``--workers 1`` runs, no dask) is measured too. Besides wall time, the CPU
    seconds of the client and of the workers are recorded: on a shared machine the wall ratio says
    more about the other jobs than about convert (see the notes).
    """
    import dask
    from distributed import Client, LocalCluster

    one, one_dask, warm, cold = [], [], [], []
    with dask.config.set(WORKER_CONFIG):  # the same settings as convert's own local cluster
        clusters = [LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address="127.0.0.1:0", memory_limit=0) for n in (1, 2)]  # fmt: skip
    try:
        clients = [Client(c) for c in clusters]
        for c in clusters:
            convert(files[:2], outdir / "warmup.h5", scheduler=c.scheduler_address)  # imports on the workers
        for _ in range(repeats):
            one.append(timed_convert(files, outdir / "one.h5", workers=1))
            for client, cluster, runs in zip(clients, clusters, (one_dask, warm)):
                w0 = _worker_cpu(client)
                wall, client_cpu = timed_convert(files, outdir / "dask.h5", scheduler=cluster.scheduler_address)
                runs.append((wall, client_cpu, _worker_cpu(client) - w0))
            cold.append(timed_convert(files, outdir / "two-cold.h5", workers=2))
        for client in clients:
            client.close()
    finally:
        for c in clusters:
            c.close()
    return {"one": one, "one_dask": one_dask, "warm": warm, "cold": cold}


BIG_SNIPPET = r"""
import json, sys, time
sys.path.insert(0, {repo!r})


def hwm_mb():
    # VmHWM is the peak RSS of this address space (ru_maxrss would include the parent's before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


mode, big, out = sys.argv[1:4]
t = time.perf_counter()
if mode == "inproc":
    from sbt_batch.convert.driver import convert
    convert([big], out, workers=1)
    peak = hwm_mb()
elif mode == "dask":
    import dask
    from distributed import Client, LocalCluster
    from sbt_batch.convert.driver import convert
    from sbt_batch.convert.cluster import WORKER_CONFIG
    with dask.config.set(WORKER_CONFIG):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", memory_limit=0)
    client = Client(cluster)
    convert([big], out, scheduler=cluster.scheduler_address)
    peak = max(client.run(hwm_mb).values())
    client.close(); cluster.close()
else:
    sys.path.insert(0, {bench!r})
    import convert as bench
    bench.original([__import__("pathlib").Path(big)], __import__("pathlib").Path(out))
    peak = hwm_mb()
print(json.dumps({{"peak_mb": peak, "seconds": time.perf_counter() - t}}))
"""


def big_file(workdir: Path, gigabytes: float) -> tuple[Path, int]:
    """One large ntuple (lz4) of about ``gigabytes`` of uncompressed tower data, written block by block."""
    import uproot

    per_event = 1184 * 4 + 4
    n = int(gigabytes * 1e9 / per_event)
    path = workdir / f"big-{gigabytes:g}GB.root"
    if path.exists():
        return path, n
    eta, phi, _ = tower_map()
    et, rho = generate_events("background", 5000, np.random.default_rng(5))
    tmp = path.with_suffix(".tmp")
    with uproot.recreate(tmp, compression=uproot.LZ4(1)) as f:
        f.mktree("mytree", {ET_BRANCH: (np.float32, (1184,)), RHO_BRANCH: np.float32})
        done = 0
        while done < n:
            k = min(500, n - done)
            s = done % 4500
            f["mytree"].extend({ET_BRANCH: et[s : s + k], RHO_BRANCH: rho[s : s + k] + done})
            done += k
        f.mktree("maps", {"gTowerEta": (np.float32, (1184,)), "gTowerPhi": (np.float32, (1184,))})
        f["maps"].extend({"gTowerEta": eta[None], "gTowerPhi": phi[None]})
    tmp.rename(path)
    return path, n


def memory(workdir: Path, gigabytes: float) -> dict:
    big, n = big_file(workdir, gigabytes)
    res = {"events": n, "file_gb": big.stat().st_size / 1e9}
    code = BIG_SNIPPET.format(repo=str(REPO), bench=str(Path(__file__).parent))
    for mode in ("inproc", "dask", "original"):
        out = workdir / f"big-{mode}.h5"
        proc = subprocess.run([sys.executable, "-c", code, mode, str(big), str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            res[mode] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        out.unlink(missing_ok=True)
    return res


def startup(repeats: int = 7) -> dict:
    exe = Path(sys.executable).parent / "sbt-batch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sbt_batch"]
    res = {}
    for args in (["--help"], ["convert", "--help"]):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(cmd + args, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        res[" ".join(["sbt-batch", *args])] = {"best": min(times), "median": statistics.median(times)}
    code = "import sys; from sbt_batch.cli import main\ntry: main(['convert', '--help'])\nexcept SystemExit: pass\nprint(any(m.startswith('tensorflow') for m in sys.modules), any(m.startswith('uproot') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    res["imports tensorflow / uproot at convert --help"] = " / ".join(out[-2:])
    return res


def report(args, load_before, thr, scal, mem, start, seconds) -> str:
    ev = args.files * args.events
    lines = [
        "# Benchmark: sbt-batch convert",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine()}",
        f"- Command: `.venv/bin/python benchmarks/convert.py --files {args.files} --events {args.events} --big-gb {args.big_gb} --repeats {args.repeats}` ({seconds:.0f} s)",
        f"- Outputs of the throughput and scaling runs: `{args.outdir}`; the kernel's dirty page-cache limit here is",
        f"  {dirty_limit()} (see the notes).",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load()}. The 2 cores are shared with other",
        "  jobs, so absolute rates are noisy; each figure is the best of the interleaved repeats.",
        f"- Inputs: {args.files} files x {args.events} events (ntuples from `sbt_batch.convert.samples`, {args.basket} events per basket),",
        "  the same events written with zlib-1 and lz4-1 (lz4 does not shrink these floats, so ROOT stored the lz4",
        "  baskets uncompressed). Output: 24 x 32 images, shuffle + deflate-1, 64-event chunks.",
        "",
        "## Throughput, 1 worker (in-process)",
        "",
        "| input | bare uproot read | convert | **convert / bare** (wall) | convert / bare (CPU s) | convert, output uncompressed (CPU ratio) | convert / bare with isal (CPU) | original approach | **convert / original** (wall) | (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in thr.items():
        b, c = r["best_s"], r["cpu_s"]

        def rate(k: str, b: dict = b) -> float:
            return ev / b[k]

        lines.append(
            f"| {name} ({r['in_mb']:.0f} MB) | {rate('bare'):,.0f} ev/s | {rate('convert'):,.0f} ev/s | **{b['bare'] / b['convert']:.2f}** "
            f"| {c['bare'] / c['convert']:.2f} | {c['bare'] / c['convert_nocomp']:.2f} | {c['bare_isal'] / c['convert']:.2f} "
            f"| {rate('original'):,.0f} ev/s | **{b['original'] / b['convert']:.2f}** | {c['original'] / c['convert']:.2f} |"
        )
    one = min(scal["one"])  # (wall, cpu) of the best run
    one_dask = min(scal["one_dask"])  # (wall, client cpu, worker cpu)
    warm = min(scal["warm"])
    cold = min(w for w, _ in scal["cold"])
    def rate(s):
        return f"{ev / s:,.0f} ev/s ({s:.2f} s)"
    lines += [
        "",
        "## Scaling (zlib inputs)",
        "",
        "| 1 dask worker | 2 dask workers | **2 / 1 workers** (running clusters, `--scheduler`) | 1 worker in-process (`--workers 1`, no dask) | 2 workers / in-process | 2 workers, cluster started by convert | that / in-process |",
        "|---|---|---|---|---|---|---|",
        f"| {rate(one_dask[0])} | {rate(warm[0])} | **{one_dask[0] / warm[0]:.2f}** | {rate(one[0])} | {one[0] / warm[0]:.2f} | {rate(cold)} | {one[0] / cold:.2f} |",
        "",
        "| CPU seconds | client | workers | (client + workers) |",
        "|---|---|---|---|",
        f"| 1 dask worker | {one_dask[1]:.2f} | {one_dask[2]:.2f} | {one_dask[1] + one_dask[2]:.2f} |",
        f"| 2 dask workers | {warm[1]:.2f} | {warm[2]:.2f} | {warm[1] + warm[2]:.2f} |",
        f"| in-process | {one[1]:.2f} | - | {one[1]:.2f} |",
        "",
        f"On an idle 2-core machine (both cores busy, no waiting), 2 workers would take (client + workers) / 2: "
        f"2 / 1 dask workers = **{(one_dask[1] + one_dask[2]) / ((warm[1] + warm[2]) / 2):.2f}**, "
        f"2 workers / in-process = {one[1] / ((warm[1] + warm[2]) / 2):.2f}.",
    ]
    if mem:
        lines += ["", f"## Peak memory converting one {mem['file_gb']:.2f} GB file ({mem['events']:,} events, lz4, default --step-size 100MB)", "",
                  "| how | peak RSS | time |", "|---|---|---|"]  # fmt: skip
        for mode, label in (("inproc", "convert --workers 1 (the process)"), ("dask", "convert on a dask worker (the worker)"),
                            ("original", "original approach (whole file in memory)")):  # fmt: skip
            m = mem[mode]
            lines.append(f"| {label} | {m['peak_mb']:.0f} MB | {m['seconds']:.1f} s |" if "peak_mb" in m else f"| {label} | failed: {m['error']} | |")
    lines += ["", "## CLI start-up", "", "| command | best | median |", "|---|---|---|"]
    for k, v in start.items():
        if isinstance(v, dict):
            lines.append(f"| `{k}` | {v['best']:.3f} s | {v['median']:.3f} s |")
        else:
            lines.append(f"| {k} | {v} | |")
    lines += [
        "",
        "## Notes",
        "",
        "- *bare* is `tree.arrays([gTowerEt, Kt4EMTopoEventShape_Density], library=\"np\")` with uproot's defaults",
        "  (zlib inflate by the standard library). convert lets uproot inflate with ISA-L (`isal`, uproot's own",
        "  option) and deflates output chunks with ISA-L; *bare isal* is the bare read with the same inflater.",
        "- Writing and compressing the output is the part of convert that the bare read does not do. *convert, output",
        "  uncompressed* (`convert(..., level=None)`, not a CLI option) shows the reading + grid + writing cost alone.",
        "- lz4 input: the bare read copies stored (uncompressed) baskets at about 1.3 GB/s. Deflating the top byte",
        "  plane of the output (the only one that compresses) runs at about 300 MB/s of that plane, and writing the",
        "  output file costs a memory copy of its own, so on one core convert cannot come near a read that does",
        "  neither; *output uncompressed* is the ceiling for any converter that writes its output.",
        "- Outputs go to tmpfs: this VM sets `vm.dirty_bytes` to 100 MB, so a process that writes more than that",
        "  waits for the disk, while the bare read only reads the page cache. The",
        "  CPU-time columns do not depend on where the output goes.",
        "- Workers are single-threaded processes (`decompression_executor`/`interpretation_executor` left serial),",
        "  so N workers use N cores; a threaded executor inside one worker would only steal the second worker's core.",
        "- With dask, the workers read, encode and write (each range right after the previous one, by the worker",
        "  that encoded it); the client scans the inputs and runs the dask scheduler (in-process). The scaling",
        "  figure compares that same code path on 1 and on 2 workers; `--workers 1` itself converts in-process",
        "  without dask (about as fast as 1 dask worker), and the table shows 2 workers against it as well.",
        "- This machine runs with `kernel.sched_autogroup_enabled=1` and was shared with other jobs: all processes",
        "  of one session (this benchmark, its dask workers) share one CPU slice, so while other sessions keep",
        "  the cores busy a second worker cannot get more CPU and the *wall* 2/1 ratio stays near 1. The CPU",
        "  seconds are not affected by waiting, so the CPU columns are the contention-free estimate.",
        "- Peak memory does not depend on the file size once the file is larger than one step: it is set by",
        "  `--step-size` (uproot's basket buffers, the step's arrays, one gathered step).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--basket", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--big-gb", type=float, default=2.0, help="size of the one-file memory test (0 skips it)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sbt-bench-convert"), help="inputs (and the memory test)")
    p.add_argument("--outdir", type=Path, default=default_outdir(),
                   help="outputs of the throughput and scaling runs (default: tmpfs, see the notes)")
    p.add_argument("--keep", action="store_true", help="keep the generated inputs in --workdir")
    args = p.parse_args()
    t0 = time.perf_counter()
    load_before = load()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print("generating inputs ...", flush=True)
    inputs = make_inputs(args.workdir, args.files, args.events, args.basket)
    print("throughput ...", flush=True)
    args.outdir.mkdir(parents=True, exist_ok=True)
    thr = throughput(inputs, args.outdir, args.repeats, args.files * args.events)
    print("scaling ...", flush=True)
    scal = scaling(inputs["zlib:1"], args.outdir, args.repeats)
    mem = None
    if args.big_gb > 0:
        print("memory ...", flush=True)
        mem = memory(args.workdir, args.big_gb)
    print("start-up ...", flush=True)
    start = startup()
    text = report(args, load_before, thr, scal, mem, start, time.perf_counter() - t0)
    out = REPO / "benchmarks" / "results" / "convert.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"throughput": thr, "scaling": scal, "memory": mem, "startup": start}, indent=1, default=str))
    print(text)
    shutil.rmtree(args.outdir, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
