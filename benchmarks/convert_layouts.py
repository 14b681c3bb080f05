"""Benchmark of ``sbt-batch convert`` on ntuples written by ROOT: std::vector<float> against float[N], uproot and RDataFrame.

    .venv/bin/python benchmarks/convert_layouts.py [--files 6] [--events 4000] [--repeats 5] [--big-gb 2] [--workdir DIR]

Needs PyROOT (the ``test`` extra's ``root``). Writes benchmarks/results/convert_layouts.md (and .json).
Every ratio is measured within this one run: the measurements are interleaved, repeated
``--repeats`` times, and the median of each is used.

- (a) layout cost: convert of std::vector<float> inputs / convert of the same events as float[N];
- (b) the vector convert / uproot's own read of the vector branch;
- (c) convert / RDataFrame ``AsNumpy`` of the same branches, zlib and lz4, fixed arrays and vectors;
- (d) peak RSS converting one large vector file (ROOT, zlib level 1), deleted afterwards.
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
sys.path.insert(0, str(REPO / "tests"))

from convert import BIG_SNIPPET
from machine import cpu_model
from root_fixtures import COMPRESSIONS, root_available, write_root_files

from sbt_batch.convert.driver import convert
from sbt_batch.convert.names import ET_BRANCH, RHO_BRANCH
from sbt_batch.convert.samples import generate_events, tower_map

LAYOUTS = ("fixed", "vector")
CODECS = ("zlib", "lz4")  # level 1 each: 101 and 401
ROOT_DEFAULT_FLUSH = -30_000_000  # TTree's default auto-flush (30 MB clusters), as in files nobody tuned


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    return f"{os.cpu_count()} cores (`nproc`={len(os.sched_getaffinity(0))}), {cpu_model()}, Python {platform.python_version()}"


def make_inputs(workdir: Path, files: int, events: int) -> dict[tuple[str, str], list[Path]]:
    """The same generated events written by ROOT in each layout and codec (cached between runs)."""
    eta, phi, _ = tower_map()
    out: dict[tuple[str, str], list[Path]] = {(lay, c): [] for lay in LAYOUTS for c in CODECS}
    specs = []
    for i in range(files):
        paths = {(lay, c): workdir / f"{lay}-{c}" / f"f{i:03d}.root" for lay in LAYOUTS for c in CODECS}
        missing = [k for k, p in paths.items() if not p.exists()]
        if missing:
            et, rho = generate_events("signal" if i % 2 else "background", events, np.random.default_rng([77, i]))
            for key in missing:
                paths[key].parent.mkdir(parents=True, exist_ok=True)
                comp = COMPRESSIONS[key[1]] // 100 * 100 + 1
                specs.append(dict(path=paths[key], et=et, rho=rho, eta=eta, phi=phi, layout=key[0], comp=comp, flush=ROOT_DEFAULT_FLUSH))
        for key, p in paths.items():
            out[key].append(p)
        if len(specs) >= 8:  # bound the events held for the writer
            write_root_files(specs, workdir / "spool", timeout=1800)
            specs = []
    if specs:
        write_root_files(specs, workdir / "spool", timeout=1800)
    return out


def set_inflate(library: str) -> None:
    import uproot.compression as uc

    uc._decompress_ZLIB.library = library


def timed(fn) -> tuple[float, float]:
    """(wall, cpu) seconds of ``fn()`` in this process."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bare_vector_read(files: list[Path], library: str) -> None:
    """uproot's own read of the two branches, nothing else (``library`` np: object arrays; ak: awkward)."""
    import uproot

    for f in files:
        with uproot.open(f) as rf:
            rf["mytree"].arrays([ET_BRANCH, RHO_BRANCH], library=library)


def cli_convert(files: list[Path], out: Path) -> float:
    exe = Path(sys.executable).parent / "sbt-batch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sbt_batch"]
    t = time.perf_counter()
    subprocess.run([*cmd, "convert", *map(str, files), "-o", str(out), "--workers", "1"], check=True, capture_output=True)
    return time.perf_counter() - t


ASNUMPY = r"""
import json, sys, time, warnings
t0 = time.perf_counter()
warnings.simplefilter("ignore")
import numpy as np
import ROOT
files = sys.argv[2:]
runs = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    a = ROOT.RDataFrame("mytree", files).AsNumpy(["gTowerEt", "Kt4EMTopoEventShape_Density"])
    et = np.stack(a["gTowerEt"])
    rho = a["Kt4EMTopoEventShape_Density"]
    runs.append(time.perf_counter() - t)
print(json.dumps({"runs": runs, "events": int(len(rho)), "towers": int(et.shape[1]), "total_s": time.perf_counter() - t0}))
"""


def asnumpy(files: list[Path]) -> dict:
    """RDataFrame AsNumpy of gTowerEt and rho, stacked into arrays: a cold run (ROOT's start-up and JIT included) and a warm one."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ASNUMPY, "2", *map(str, files)], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_first_s"] = time.perf_counter() - t - res["runs"][1]  # the process up to the end of its first run
    return res


def throughput(inputs: dict, outdir: Path, repeats: int) -> dict:
    times: dict[str, list] = {}

    def add(key: str, value) -> None:
        times.setdefault(key, []).append(value)

    convert(inputs[("vector", "zlib")][:1], outdir / "warmup.h5", workers=1)  # imports and first-use costs, untimed
    bare_vector_read(inputs[("vector", "zlib")][:1], "ak")
    for _ in range(repeats):
        for codec in CODECS:
            for layout in LAYOUTS:
                files = inputs[(layout, codec)]
                add(f"convert {layout} {codec}", timed(lambda files=files: convert(files, outdir / "out.h5", workers=1)))
                add(f"cli {layout} {codec}", cli_convert(files, outdir / "cli.h5"))
                add(f"asnumpy {layout} {codec}", asnumpy(files))
            vec = inputs[("vector", codec)]
            set_inflate("zlib")  # uproot's default
            add(f"bare np {codec}", timed(lambda vec=vec: bare_vector_read(vec, "np")))
            add(f"bare ak {codec}", timed(lambda vec=vec: bare_vector_read(vec, "ak")))
            set_inflate("isal")  # the inflater convert uses
            add(f"bare np isal {codec}", timed(lambda vec=vec: bare_vector_read(vec, "np")))
            add(f"bare ak isal {codec}", timed(lambda vec=vec: bare_vector_read(vec, "ak")))
    set_inflate("zlib")
    return times


BIG_WRITER = r"""
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import ROOT
ROOT.gInterpreter.Declare('''
#include <vector>
#include "TFile.h"
#include "TTree.h"
void sbt_write_big(const char* path, int comp, long long n_total, const float* et, long long n_block, long long n_towers,
                   const float* rho, const float* eta, const float* phi) {
  TFile f(path, "RECREATE", "", comp);
  TTree t("mytree", "mytree");
  std::vector<float> v; float r;
  t.Branch("gTowerEt", &v);
  t.Branch("Kt4EMTopoEventShape_Density", &r, "Kt4EMTopoEventShape_Density/F");
  for (long long i = 0; i < n_total; ++i) {
    long long k = i % n_block;
    v.assign(et + k * n_towers, et + (k + 1) * n_towers);
    r = rho[k];
    t.Fill();
  }
  t.Write();
  TTree m("maps", "maps");
  std::vector<float> ve(eta, eta + n_towers), vp(phi, phi + n_towers);
  m.Branch("gTowerEta", &ve);
  m.Branch("gTowerPhi", &vp);
  m.Fill();
  m.Write();
  f.Close();
}
''')
d = np.load(sys.argv[2])
et, rho, eta, phi = (np.ascontiguousarray(d[k]) for k in ("et", "rho", "eta", "phi"))
ROOT.sbt_write_big(sys.argv[1], 101, int(sys.argv[3]), et, len(rho), eta.size, rho, eta, phi)
"""

# the peak-RSS child process (in-process and on one dask worker) is benchmarks/convert.py's


def memory(gigabytes: float) -> dict:
    """Peak RSS converting one ROOT-written std::vector<float> file of about ``gigabytes`` of towers (in /tmp, deleted after)."""
    big_dir = Path("/tmp") / f"sbt-bench-layouts-big-{os.getpid()}"
    big_dir.mkdir(parents=True, exist_ok=True)
    try:
        n = int(gigabytes * 1e9 / (1184 * 4 + 10 + 4))
        eta, phi, _ = tower_map()
        et, rho = generate_events("background", 5000, np.random.default_rng(5))
        block = big_dir / "block.npz"
        np.savez(block, et=et, rho=rho, eta=eta, phi=phi)
        big = big_dir / "big-vector.root"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", BIG_WRITER, str(big), str(block), str(n)], check=True, capture_output=True, timeout=3600)
        res: dict = {"events": n, "file_gb": big.stat().st_size / 1e9, "write_s": time.perf_counter() - t}
        code = BIG_SNIPPET.format(repo=str(REPO), bench=str(Path(__file__).parent))
        for mode in ("inproc", "dask"):
            out = big_dir / f"big-{mode}.h5"
            proc = subprocess.run([sys.executable, "-c", code, mode, str(big), str(out)], capture_output=True, text=True)
            if proc.returncode != 0:
                res[mode] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            else:
                res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            out.unlink(missing_ok=True)
        return res
    finally:
        shutil.rmtree(big_dir, ignore_errors=True)


def med(values: list) -> float:
    return statistics.median(v[0] if isinstance(v, tuple) else v for v in values)


def med_cpu(values: list) -> float:
    return statistics.median(v[1] for v in values)


def baskets(path: Path) -> str:
    """How ROOT split a file's gTowerEt into baskets (its default basket size, re-optimized after the first cluster)."""
    import uproot

    with uproot.open(path) as f:
        branch = f["mytree"][ET_BRANCH]
        counts = np.diff([int(x) for x in branch.member("fBasketEntry")[: branch.num_baskets + 1]])
    return f"{branch.num_baskets} baskets of {counts.min()}-{counts.max()} events (median {int(np.median(counts))})"


def report(args, load_before: str, inputs: dict, times: dict, mem: dict | None, seconds: float) -> str:
    ev = args.files * args.events
    size = {k: sum(p.stat().st_size for p in v) / 1e6 for k, v in inputs.items()}
    def rate(s):
        return f"{ev / s:,.0f} ev/s"
    lines = [
        "# Benchmark: convert of ROOT-written std::vector<float> and float[N] ntuples",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine()}",
        f"- Command: `.venv/bin/python benchmarks/convert_layouts.py --files {args.files} --events {args.events} --repeats {args.repeats} --big-gb {args.big_gb}` ({seconds:.0f} s)",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load()}. The 2 cores are shared with other jobs;",
        "  every figure is the median of the interleaved repeats, and every ratio compares runs of this one invocation.",
        f"- Inputs: {args.files} files x {args.events} events (generated by `sbt_batch.convert.samples`), written by ROOT 6.40 (PyROOT)",
        "  with TTree's default auto-flush, as `gTowerEt[1184]/F` (fixed) and as `std::vector<float>` (vector), zlib-1 and lz4-1: "
        + ", ".join(f"{lay} {c} {size[(lay, c)]:.0f} MB" for lay in LAYOUTS for c in CODECS) + ".",
        f"- gTowerEt of each file: {baskets(inputs[('vector', 'zlib')][0])} (vector), {baskets(inputs[('fixed', 'zlib')][0])} (fixed).",
        "- convert: in-process (`workers=1`), default grid (24 x 32), output shuffle + deflate-1.",
        "",
        "## (a) Layout cost and (b) against uproot's own vector read",
        "",
        "| input | convert fixed | convert vector | **(a) vector / fixed** (target >= 0.9) | uproot vector read, np | **(b) convert / uproot np** (target >= 1.0) | uproot np, isal inflate | convert / that | uproot vector read, ak | convert / ak | convert / ak, isal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in CODECS:
        fx, vc = med(times[f"convert fixed {c}"]), med(times[f"convert vector {c}"])
        np_, npi = med(times[f"bare np {c}"]), med(times[f"bare np isal {c}"])
        ak_, aki = med(times[f"bare ak {c}"]), med(times[f"bare ak isal {c}"])
        lines.append(f"| {c} | {rate(fx)} | {rate(vc)} | **{fx / vc:.2f}** | {rate(np_)} | **{np_ / vc:.2f}** | {rate(npi)} | {npi / vc:.2f} "
                     f"| {rate(ak_)} | {ak_ / vc:.2f} | {aki / vc:.2f} |")  # fmt: skip
    lines += ["", "CPU seconds of the same runs (this process): "
              + "; ".join(f"{c}: convert fixed {med_cpu(times[f'convert fixed {c}']):.2f}, convert vector {med_cpu(times[f'convert vector {c}']):.2f}, "
                          f"uproot np {med_cpu(times[f'bare np {c}']):.2f}, uproot ak {med_cpu(times[f'bare ak {c}']):.2f}" for c in CODECS) + "."]  # fmt: skip
    lines += [
        "",
        "## (c) Against RDataFrame AsNumpy (what a ROOT user would write)",
        "",
        "| input | `sbt-batch convert` CLI (start-up included) | AsNumpy script, first run (ROOT start-up + JIT included) | **CLI / AsNumpy** (speed) | convert in-process | AsNumpy, warm second run | **in-process / warm** (speed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CODECS:
        for lay in LAYOUTS:
            cli = med(times[f"cli {lay} {c}"])
            runs = times[f"asnumpy {lay} {c}"]
            cold = statistics.median(r["wall_first_s"] for r in runs)
            warm = statistics.median(r["runs"][1] for r in runs)
            inproc = med(times[f"convert {lay} {c}"])
            lines.append(f"| {lay} {c} | {cli:.2f} s ({rate(cli)}) | {cold:.2f} s ({rate(cold)}) | **{cold / cli:.2f}** | {inproc:.2f} s | {warm:.2f} s ({rate(warm)}) | **{warm / inproc:.2f}** |")
    if mem:
        lines += ["", f"## (d) Peak memory converting one {mem['file_gb']:.2f} GB std::vector<float> file ({mem['events']:,} events, ROOT zlib-1, default --step-size 100MB)", "",
                  "| how | peak RSS (target < 600 MB) | time |", "|---|---|---|"]  # fmt: skip
        for mode, label in (("inproc", "convert --workers 1 (the process)"), ("dask", "convert on a dask worker (the worker)")):
            m = mem[mode]
            lines.append(f"| {label} | {m['peak_mb']:.0f} MB | {m['seconds']:.1f} s |" if "peak_mb" in m else f"| {label} | failed: {m['error']} | |")
        lines.append(f"\nThe file was written by ROOT in {mem['write_s']:.0f} s under /tmp and deleted afterwards.")
    lines += [
        "",
        "## Notes",
        "",
        "- convert reads a `std::vector<float>` basket as a strided array: every entry is a 10-byte header and 1184",
        "  big-endian floats, so the entry offsets are checked at once (all sizes equal 10 + 4 x 1184) and the grid's",
        "  towers are gathered from the basket as it is, as for `float[N]`. uproot's own read (`AsJagged`) builds",
        "  offsets and strips the headers, and with `library=\"np\"` makes one array object per event.",
        "- uproot's default zlib inflater is the standard library; convert lets uproot inflate with ISA-L, so the",
        "  *isal* columns read with the same inflater as convert. lz4-1 does not shrink these floats much, and the",
        "  read is then dominated by convert's own output compression (see benchmarks/results/convert.md).",
        "- AsNumpy reads all 1184 towers of both branches into per-event RVec objects, which are then stacked; convert",
        "  keeps the grid's 768 towers and writes a compressed HDF5 file, which AsNumpy does not.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big-gb", type=float, default=2.0, help="towers of the memory test's file, GB (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sbt-bench-layouts"))
    ap.add_argument("--keep", action="store_true", help="keep the inputs for the next run")
    args = ap.parse_args()
    if not root_available():
        raise SystemExit("PyROOT is needed: pip install 'root>=0.1a12'")
    t0 = time.perf_counter()
    load_before = load()
    args.workdir.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(args.workdir, args.files, args.events)
    outdir = args.workdir / "out"
    outdir.mkdir(exist_ok=True)
    times = throughput(inputs, outdir, args.repeats)
    mem = memory(args.big_gb) if args.big_gb > 0 else None
    text = report(args, load_before, inputs, times, mem, time.perf_counter() - t0)
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "convert_layouts.md").write_text(text)
    (results / "convert_layouts.json").write_text(json.dumps({"times": times, "memory": mem}, indent=1, default=str))
    print(text)
    shutil.rmtree(outdir, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
