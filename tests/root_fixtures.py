"""gFEX ntuples written by ROOT itself (PyROOT), in each layout that real files use.

The writing runs in a subprocess (``python tests/root_fixtures.py SPEC.json``): importing ROOT in
the pytest process would load its interpreter and signal handlers into every later test. Each
file is described by a dict (see :func:`write_root_files`); the events travel as one ``.npz`` per
file. Layouts:

- ``fixed``: ``gTowerEt[N]/F`` leaves (TTree::Branch with a leaf list);
- ``vector``: ``std::vector<E>`` branches, E = float, double or int (a variable length per entry);
- ``rvec``: an ``RDataFrame(n).Define(...).Snapshot(...)``, which writes ``ROOT::VecOps::RVec<float>``.

rho (``Kt4EMTopoEventShape_Density``) is ``float``, ``double`` or ``float[2]``. The maps tree has the
same layout as the events. ``comp`` is ROOT's algorithm * 100 + level (101 zlib, 404 lz4, 505 zstd,
207 lzma); ``flush`` is the auto-flush (entries per cluster).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

COMPRESSIONS = {"zlib": 101, "lz4": 404, "zstd": 505, "lzma": 207}

CPP = r"""
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"
#include "ROOT/RDataFrame.hxx"
#include "ROOT/RVec.hxx"

namespace sbt_fixture {

// Events [i] are a[offsets[i] .. offsets[i+1]); "float2" rho stores each value twice (a wrong shape on purpose).
void write_tree(const char* path, const char* mode, int comp, long long flush, const char* name, const char* layout,
                const char* elem, const char* branch_a, const float* a, const char* branch_b, const float* b,
                const long long* offsets, long long n, const char* rho_kind, const double* rho) {
  TFile f(path, mode, "", comp);
  TTree t(name, name);
  t.SetAutoFlush(flush);
  std::string lay(layout), el(elem), rk(rho_kind);
  long long width = n ? offsets[1] - offsets[0] : 0;
  std::vector<float> fa(width), fb(width);
  std::vector<float> va, vb;
  std::vector<double> da;
  std::vector<int> ia;
  float rf[2]; double rd;
  if (lay == "fixed") {
    t.Branch(branch_a, fa.data(), (std::string(branch_a) + "[" + std::to_string(width) + "]/F").c_str());
    if (b) t.Branch(branch_b, fb.data(), (std::string(branch_b) + "[" + std::to_string(width) + "]/F").c_str());
  } else if (el == "double") {
    t.Branch(branch_a, &da);
  } else if (el == "int") {
    t.Branch(branch_a, &ia);
  } else {
    t.Branch(branch_a, &va);
    if (b) t.Branch(branch_b, &vb);
  }
  if (rho) {
    if (rk == "double") t.Branch("Kt4EMTopoEventShape_Density", &rd, "Kt4EMTopoEventShape_Density/D");
    else if (rk == "float2") t.Branch("Kt4EMTopoEventShape_Density", rf, "Kt4EMTopoEventShape_Density[2]/F");
    else t.Branch("Kt4EMTopoEventShape_Density", rf, "Kt4EMTopoEventShape_Density/F");
  }
  for (long long i = 0; i < n; ++i) {
    const float* s = a + offsets[i];
    const float* e = a + offsets[i + 1];
    if (lay == "fixed") {
      std::copy(s, e, fa.begin());
      if (b) std::copy(b + offsets[i], b + offsets[i + 1], fb.begin());
    } else if (el == "double") {
      da.assign(s, e);
    } else if (el == "int") {
      ia.assign(s, e);
    } else {
      va.assign(s, e);
      if (b) vb.assign(b + offsets[i], b + offsets[i + 1]);
    }
    if (rho) { rd = rho[i]; rf[0] = (float)rho[i]; rf[1] = (float)rho[i]; }
    t.Fill();
  }
  t.Write();
  f.Close();
}

ROOT::RDF::RSnapshotOptions options(const char* mode, int comp, long long flush) {
  ROOT::RDF::RSnapshotOptions o;
  o.fMode = mode;
  o.fCompressionAlgorithm = static_cast<ROOT::RCompressionSetting::EAlgorithm::EValues>(comp / 100);
  o.fCompressionLevel = comp % 100;
  o.fAutoFlush = flush;
  return o;
}

// RDataFrame Snapshot of RVec<float> columns (events: gTowerEt + rho as float or double; maps: eta + phi).
void snapshot_events(const char* path, int comp, long long flush, const float* et, const long long* offsets,
                     long long n, const double* rho, bool rho_double) {
  ROOT::RDataFrame df(n);
  auto d = df.Define("gTowerEt", [et, offsets](ULong64_t i) {
    return ROOT::RVecF(et + offsets[i], et + offsets[i + 1]);
  }, {"rdfentry_"});
  if (rho_double) {
    d.Define("Kt4EMTopoEventShape_Density", [rho](ULong64_t i) { return rho[i]; }, {"rdfentry_"})
     .Snapshot("mytree", path, {"gTowerEt", "Kt4EMTopoEventShape_Density"}, options("RECREATE", comp, flush));
  } else {
    d.Define("Kt4EMTopoEventShape_Density", [rho](ULong64_t i) { return (float)rho[i]; }, {"rdfentry_"})
     .Snapshot("mytree", path, {"gTowerEt", "Kt4EMTopoEventShape_Density"}, options("RECREATE", comp, flush));
  }
}

void snapshot_maps(const char* path, const float* eta, const float* phi, long long n_towers) {
  ROOT::RDataFrame df(1);
  df.Define("gTowerEta", [eta, n_towers]() { return ROOT::RVecF(eta, eta + n_towers); }, {})
    .Define("gTowerPhi", [phi, n_towers]() { return ROOT::RVecF(phi, phi + n_towers); }, {})
    .Snapshot("maps", path, {"gTowerEta", "gTowerPhi"}, options("UPDATE", 101, 0));
}

}  // namespace sbt_fixture
"""


def root_available() -> bool:
    """True when PyROOT can be imported (the PyPI package ``root``)."""
    return importlib.util.find_spec("ROOT") is not None


def write_root_files(specs: list[dict[str, Any]], workdir: Path, timeout: float = 600) -> None:
    """Write every file in ``specs`` with ROOT, in one subprocess.

    A spec has ``path``, ``et`` (a list of per-event float arrays, or an (n, N) array), ``rho`` (n,),
    ``eta`` and ``phi`` (the maps), and optionally ``layout`` (fixed, vector, rvec), ``elem`` (float,
    double, int), ``rho_kind`` (float, double, float2), ``comp`` (e.g. 101) and ``flush``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k, spec in enumerate(specs):
        et = spec["et"]
        rows = [np.asarray(e, dtype=np.float32) for e in et]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        data = workdir / f"events-{k}.npz"
        np.savez(data, et=np.concatenate(rows) if rows else np.empty(0, np.float32), offsets=offsets,
                 rho=np.asarray(spec["rho"], dtype=np.float64), eta=np.asarray(spec["eta"], np.float32),
                 phi=np.asarray(spec["phi"], np.float32))  # fmt: skip
        jobs.append({
            "path": str(spec["path"]), "data": str(data), "layout": spec.get("layout", "vector"),
            "elem": spec.get("elem", "float"), "rho_kind": spec.get("rho_kind", "float"),
            "comp": int(spec.get("comp", 101)), "flush": int(spec.get("flush", 0)),
        })  # fmt: skip
    spec_file = workdir / "specs.json"
    spec_file.write_text(json.dumps(jobs))
    result = subprocess.run([sys.executable, "-W", "ignore", __file__, str(spec_file)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"writing ROOT fixtures failed:\n{result.stdout}\n{result.stderr}")
    for data in workdir.glob("events-*.npz"):
        data.unlink()


def _write_one(ROOT: Any, job: dict[str, Any]) -> None:
    d = np.load(job["data"])
    et, offsets, rho = np.ascontiguousarray(d["et"]), np.ascontiguousarray(d["offsets"], dtype=np.longlong), np.ascontiguousarray(d["rho"])
    eta, phi = np.ascontiguousarray(d["eta"]), np.ascontiguousarray(d["phi"])
    n = len(offsets) - 1
    path, comp, flush = job["path"], job["comp"], job["flush"]
    ns = ROOT.sbt_fixture
    map_offsets = np.array([0, len(eta)], dtype=np.longlong)
    if job["layout"] == "rvec":
        ns.snapshot_events(path, comp, flush, et, offsets, n, rho, job["rho_kind"] == "double")
        ns.snapshot_maps(path, eta, phi, len(eta))
        return
    ns.write_tree(path, "RECREATE", comp, flush, "mytree", job["layout"], job["elem"], "gTowerEt", et, "", ROOT.nullptr,
                  offsets, n, job["rho_kind"], rho)  # fmt: skip
    ns.write_tree(path, "UPDATE", comp, 0, "maps", job["layout"], "float", "gTowerEta", eta, "gTowerPhi", phi,
                  map_offsets, 1, "float", ROOT.nullptr)  # fmt: skip


def main(spec_file: str) -> None:
    """Write the files listed in ``spec_file`` (run by :func:`write_root_files`)."""
    import ROOT

    ROOT.gROOT.SetBatch(True)
    if not ROOT.gInterpreter.Declare(CPP):
        raise SystemExit("cannot compile the fixture writer")
    for job in json.loads(Path(spec_file).read_text()):
        _write_one(ROOT, job)


if __name__ == "__main__":
    main(sys.argv[1])
